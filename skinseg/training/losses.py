"""Segmentation losses and pooled overlap metrics, registered so .keras files load in safe mode."""

from __future__ import annotations

import keras
from keras import ops

EPS = 1e-6


def _flat(y_true, y_pred):
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    return ops.reshape(y_true, (ops.shape(y_true)[0], -1)), ops.reshape(y_pred, (ops.shape(y_pred)[0], -1))


@keras.saving.register_keras_serializable(package="skinseg")
def dice_loss(y_true, y_pred):
    """1 - soft Dice per image (empty-vs-empty counts as perfect)."""
    t, p = _flat(y_true, y_pred)
    inter = ops.sum(t * p, axis=1)
    return 1.0 - (2.0 * inter + 1.0) / (ops.sum(t, axis=1) + ops.sum(p, axis=1) + 1.0)


@keras.saving.register_keras_serializable(package="skinseg")
def jaccard_loss(y_true, y_pred):
    """1 - soft Jaccard per image."""
    t, p = _flat(y_true, y_pred)
    inter = ops.sum(t * p, axis=1)
    union = ops.sum(t, axis=1) + ops.sum(p, axis=1) - inter
    return 1.0 - (inter + 1.0) / (union + 1.0)


@keras.saving.register_keras_serializable(package="skinseg")
def bce_loss(y_true, y_pred):
    t, p = _flat(y_true, y_pred)
    return ops.mean(keras.losses.binary_crossentropy(t[..., None], p[..., None]), axis=1)


@keras.saving.register_keras_serializable(package="skinseg")
def bce_dice_loss(y_true, y_pred):
    """The seed's default: binary cross-entropy plus Dice loss."""
    return bce_loss(y_true, y_pred) + dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="skinseg")
def focal_loss(y_true, y_pred):
    """Binary focal loss (gamma 2, alpha 0.25), for images where lesions are small."""
    t, p = _flat(y_true, y_pred)
    return ops.mean(keras.losses.binary_focal_crossentropy(t[..., None], p[..., None], apply_class_balancing=True,
                                                           alpha=0.25, gamma=2.0), axis=1)


LOSSES = {"bce": bce_loss, "dice": dice_loss, "bce_dice": bce_dice_loss, "focal": focal_loss,
          "jaccard": jaccard_loss}


@keras.saving.register_keras_serializable(package="skinseg")
class Overlap(keras.metrics.Metric):
    """Dice or Jaccard of thresholded predictions, pooled over all pixels seen in the epoch."""

    def __init__(self, kind: str = "jaccard", threshold: float = 0.5, name: str | None = None, **kwargs):
        super().__init__(name=name or kind, **kwargs)
        self.kind, self.threshold = kind, threshold
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.cast(y_true, "float32") >= 0.5, "float32")
        p = ops.cast(ops.cast(y_pred, "float32") >= self.threshold, "float32")
        self.tp.assign_add(ops.sum(t * p))
        self.fp.assign_add(ops.sum((1 - t) * p))
        self.fn.assign_add(ops.sum(t * (1 - p)))

    def result(self):
        if self.kind == "dice":
            return (2 * self.tp + EPS) / (2 * self.tp + self.fp + self.fn + EPS)
        return (self.tp + EPS) / (self.tp + self.fp + self.fn + EPS)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "threshold": self.threshold}
