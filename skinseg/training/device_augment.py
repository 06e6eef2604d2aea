"""Augmentation on the accelerator: the [augmentor] section as Keras ops inside the compiled train step.

The host then only feeds cached uint8 tiles; flips, 90-degree and free rotation, zoom/shrink, shear,
elastic deformation and colour jitter run on the GPU under TensorFlow, JAX or PyTorch alike. One
sampling grid moves image and mask by exactly the same geometry: bilinear for the image, nearest for
the mask (so it stays binary), borders mirrored as albumentations' BORDER_REFLECT_101 does. The
parameters follow the host path's semantics (`training/augment.py`, the seed's), with one
approximation: hue is rotated in YIQ space (a linear map) instead of HSV.

`AugmentedTrainer` wraps the segmentation model for `fit`: its input packs image and mask into four
channels, its output packs prediction and augmented mask, and `packed_loss` / `PackedOverlap` unpack
them. Validation, checkpoints and export use the plain model inside.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


def _kernel(sigma: float) -> Any:
    r = max(1, int(math.ceil(2 * sigma)))
    x = ops.arange(-r, r + 1, dtype="float32")
    k = ops.exp(-0.5 * (x / sigma) ** 2)
    return k / ops.sum(k)


@keras.saving.register_keras_serializable(package="skinseg")
class DeviceAugment(keras.layers.Layer):
    """Random geometry and colour for a batch of (image, mask) tiles, seeded, on the device."""

    def __init__(self, aug: dict[str, Any], seed: int = 42, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aug = dict(aug)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        a = self.aug
        self.p = float(a.get("probability", 0.5))
        angles = [float(v) for v in a.get("angles", [])] if a.get("rotation", True) else []
        self.rot90 = bool(angles) and all(v % 90 == 0 for v in angles)
        self.angles = angles
        scales = [*a.get("shrinks", []), *a.get("zooms", [])]
        self.scale_range = (min([*scales, 1.0]), max([*scales, 1.0]))
        self.shear = max((abs(s) for s in a.get("shears", [])), default=0.0)
        self.free_rotation = float(a.get("free_rotation", 0.0))
        self.elastic = bool(a.get("transformer", False)) and float(a.get("alpah", 0)) > 0
        self.alpha, self.sigma = float(a.get("alpah", 0)), float(a.get("sigmoid", 8))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "aug": self.aug, "seed": self.seed}

    # -- parameters ------------------------------------------------------------------------------
    def _u(self, n: Any, lo: float = 0.0, hi: float = 1.0) -> Any:
        return keras.random.uniform((n,), lo, hi, seed=self.generator)

    def _on(self, n: Any, p: float) -> Any:
        return ops.cast(self._u(n) < p, "float32")

    def sample(self, n: int) -> dict[str, Any]:
        """Per-sample parameters (tensors of shape (n,)); exposed so tests can check their ranges."""
        a = self.aug
        out: dict[str, Any] = {
            "hflip": self._on(n, 0.5) if a.get("hflip", True) else ops.zeros((n,)),
            "vflip": self._on(n, 0.5) if a.get("vflip", True) else ops.zeros((n,)),
        }
        if self.rot90:
            out["rot90"] = ops.floor(self._u(n, 0, 4)) * self._on(n, self.p)
            out["angle"] = ops.zeros((n,))
        elif self.angles:
            idx = ops.cast(ops.floor(self._u(n, 0, len(self.angles))), "int32")
            out["rot90"] = ops.zeros((n,))
            out["angle"] = ops.take(ops.convert_to_tensor(self.angles, "float32"), idx) * self._on(n, self.p)
        else:
            out["rot90"] = out["angle"] = ops.zeros((n,))
        affine = self._on(n, self.p)
        out["free_angle"] = self._u(n, -self.free_rotation, self.free_rotation) * affine
        lo, hi = self.scale_range
        out["scale"] = 1.0 + (self._u(n, lo, hi) - 1.0) * affine
        out["shear_x"] = self._u(n, -self.shear, self.shear) * affine
        out["shear_y"] = self._u(n, -self.shear, self.shear) * affine
        out["elastic"] = self._on(n, self.p * 0.5) if self.elastic else ops.zeros((n,))
        jitter = self._on(n, 0.8)
        for key in ("brightness", "contrast", "saturation"):
            v = float(a.get(key, 0.0))
            out[key] = 1.0 + self._u(n, -v, v) * jitter
        h = float(a.get("hue", 0.0))
        out["hue"] = self._u(n, -h, h) * jitter
        return out

    # -- geometry --------------------------------------------------------------------------------
    def _grid(self, prm: dict[str, Any], n: int, h: int, w: int) -> tuple[Any, Any]:
        """Input coordinates (y, x) of every output pixel, shape (n, h, w)."""
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy, xx = ops.meshgrid(ops.arange(h, dtype="float32") - cy, ops.arange(w, dtype="float32") - cx, indexing="ij")
        yy, xx = yy[None], xx[None]
        # rot90 (k quarter turns) about the centre; for non-square tiles a quarter turn maps the tile
        # onto itself only approximately, so the sampling stays within the mirrored border
        theta = (prm["rot90"] * 90.0 + prm["angle"] + prm["free_angle"]) * (math.pi / 180.0)
        c, s = ops.cos(theta)[:, None, None], ops.sin(theta)[:, None, None]
        sc = prm["scale"][:, None, None]
        shx, shy = prm["shear_x"][:, None, None], prm["shear_y"][:, None, None]
        # output -> input: undo scale, shear, rotation (the inverse of what the image undergoes)
        y1, x1 = yy / sc, xx / sc
        y2, x2 = y1 - shy * x1, x1 - shx * y1
        yin = c * y2 + s * x2
        xin = -s * y2 + c * x2
        yin = ops.where(prm["vflip"][:, None, None] > 0.5, -yin, yin)
        xin = ops.where(prm["hflip"][:, None, None] > 0.5, -xin, xin)
        if self.elastic:
            dy, dx = self._displacement(n, h, w)
            on = prm["elastic"][:, None, None]
            yin, xin = yin + dy * on, xin + dx * on
        return yin + cy, xin + cx

    def _displacement(self, n: int, h: int, w: int) -> tuple[Any, Any]:
        """albumentations' (2.0.8) elastic field: Gaussian noise scaled into [-1, 1] by its largest value,
        Gaussian-smoothed with sigma, times alpha."""
        k = _kernel(self.sigma)
        size = int(k.shape[0])
        noise = keras.random.normal((2 * n, h, w, 1), seed=self.generator)
        noise = noise / ops.maximum(ops.max(ops.abs(noise), axis=(1, 2, 3), keepdims=True), 1e-6)
        noise = ops.conv(noise, ops.reshape(k, (size, 1, 1, 1)), padding="same")
        noise = ops.conv(noise, ops.reshape(k, (1, size, 1, 1)), padding="same")
        field = noise[..., 0] * self.alpha
        return field[:n], field[n:]

    @staticmethod
    def _mirror(v: Any, size: int) -> Any:
        """Coordinates folded back into [0, size - 1] as BORDER_REFLECT_101 (edge not repeated)."""
        last = float(max(size - 1, 1))
        period = 2.0 * last
        v = ops.abs(v) - period * ops.floor(ops.abs(v) / period)
        return ops.clip(last - ops.abs(last - v), 0.0, last)

    @classmethod
    def _sample(cls, x: Any, yin: Any, xin: Any, order: int) -> Any:
        n, h, w, ch = ops.shape(x)
        yin, xin = cls._mirror(yin, int(x.shape[1])), cls._mirror(xin, int(x.shape[2]))
        b = ops.broadcast_to(ops.reshape(ops.arange(n, dtype="float32"), (-1, 1, 1, 1)), (n, h, w, ch))
        c = ops.broadcast_to(ops.reshape(ops.arange(ch, dtype="float32"), (1, 1, 1, -1)), (n, h, w, ch))
        y = ops.broadcast_to(yin[..., None], (n, h, w, ch))
        xx = ops.broadcast_to(xin[..., None], (n, h, w, ch))
        return keras.ops.image.map_coordinates(x, [b, y, xx, c], order=order, fill_mode="nearest")

    # -- colour ----------------------------------------------------------------------------------
    @staticmethod
    def _colour(img: Any, prm: dict[str, Any]) -> Any:
        x = img / 255.0
        x = x * prm["brightness"][:, None, None, None]
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * prm["contrast"][:, None, None, None] + mean
        grey = ops.sum(x * ops.convert_to_tensor([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
        x = (x - grey) * prm["saturation"][:, None, None, None] + grey
        to_yiq = ops.convert_to_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        yiq = ops.einsum("nhwc,dc->nhwd", x, to_yiq)
        t = prm["hue"] * 2 * math.pi
        cos, sin = ops.cos(t)[:, None, None], ops.sin(t)[:, None, None]
        i, q = yiq[..., 1], yiq[..., 2]
        yiq = ops.stack([yiq[..., 0], cos * i - sin * q, sin * i + cos * q], axis=-1)
        x = ops.einsum("nhwd,cd->nhwc", yiq, ops.convert_to_tensor(
            [[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))
        return ops.clip(x, 0.0, 1.0) * 255.0

    def call(self, images: Any, masks: Any) -> tuple[Any, Any]:
        """(N, H, W, 3) float pixels 0-255 and (N, H, W, 1) {0, 1} masks -> augmented, same shapes."""
        n, h, w = int(images.shape[0]) if images.shape[0] else ops.shape(images)[0], images.shape[1], images.shape[2]
        prm = self.sample(n)
        yin, xin = self._grid(prm, n, h, w)
        img = self._sample(ops.cast(images, "float32"), yin, xin, order=1)
        mask = self._sample(ops.cast(masks, "float32"), yin, xin, order=0)
        return self._colour(img, prm), mask


@keras.saving.register_keras_serializable(package="skinseg")
def packed_loss_factory(name: str) -> Any:
    from skinseg.training.losses import LOSSES

    base = LOSSES[name]

    def packed(y_true: Any, y_pred: Any) -> Any:
        return base(y_pred[..., 1:], y_pred[..., :1])

    packed.__name__ = f"packed_{name}"
    return packed


class PackedOverlap(keras.metrics.Metric):
    """Overlap (Dice/Jaccard) of a packed (prediction, augmented mask) output."""

    def __init__(self, kind: str = "jaccard", **kwargs: Any) -> None:
        from skinseg.training.losses import Overlap

        super().__init__(name=kwargs.pop("name", kind))
        self.inner = Overlap(kind)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.inner.update_state(y_pred[..., 1:], y_pred[..., :1])

    def result(self) -> Any:
        return self.inner.result()

    def reset_state(self) -> None:
        self.inner.reset_state()


class AugmentedTrainer(keras.Model):
    """Training-time wrapper: augment on the device, then the segmentation model. Not saved."""

    def __init__(self, model: keras.Model, augment: DeviceAugment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net, self.augment = model, augment

    def call(self, packed: Any, training: bool = False) -> Any:
        img, mask = self.augment(packed[..., :3], packed[..., 3:])
        return ops.concatenate([ops.cast(self.net(img, training=training), "float32"), mask], axis=-1)
