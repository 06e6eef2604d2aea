"""Online augmentation of image/mask pairs with albumentations (MIT, 2.0.8; headless OpenCV).

Geometry is applied identically to image and mask (masks use nearest-neighbour, so they stay
binary); colour jitter touches the image only. Every sample is seeded from (seed, epoch, index), so
a run is reproducible whatever order the parallel tf.data workers finish in.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


def build_augmenter(aug: Any, tile: tuple[int, int], train: bool, enabled: bool = True) -> A.Compose:
    """The [augmentor] section as an albumentations pipeline ending in a tile-sized crop."""
    th, tw = tile
    p = aug.probability
    ops: list[Any] = []
    if train and enabled:
        if aug.hflip:
            ops.append(A.HorizontalFlip(p=0.5))
        if aug.vflip:
            ops.append(A.VerticalFlip(p=0.5))
        if aug.rotation and aug.angles:
            right = [a for a in aug.angles if a % 90 == 0]
            if len(right) == len(aug.angles):
                ops.append(A.RandomRotate90(p=p))
            else:
                ops.append(A.OneOf([A.Rotate(limit=(a, a), border_mode=cv2.BORDER_REFLECT_101) for a in aug.angles],
                                   p=p))
        scales = [*aug.shrinks, *aug.zooms]
        shear = max((abs(s) for s in aug.shears), default=0.0)
        if scales or shear or aug.free_rotation:
            lo, hi = min([*scales, 1.0]), max([*scales, 1.0])
            deg = math.degrees(math.atan(shear))
            ops.append(A.Affine(scale=(lo, hi), shear={"x": (-deg, deg), "y": (-deg, deg)},
                                rotate=(-aug.free_rotation, aug.free_rotation), border_mode=cv2.BORDER_REFLECT_101,
                                p=p))
        if aug.transformer and aug.alpah > 0:
            ops.append(A.ElasticTransform(alpha=aug.alpah, sigma=aug.sigmoid, border_mode=cv2.BORDER_REFLECT_101,
                                          p=p * 0.5))
        if aug.brightness or aug.contrast or aug.saturation or aug.hue:
            ops.append(A.ColorJitter(brightness=aug.brightness, contrast=aug.contrast, saturation=aug.saturation,
                                     hue=aug.hue, p=0.8))
    ops.append(A.PadIfNeeded(th, tw, border_mode=cv2.BORDER_REFLECT_101))
    ops.append(A.RandomCrop(th, tw) if train else A.CenterCrop(th, tw))
    return A.Compose(ops, strict=True)


class Augmenter:
    """Thread-safe, per-sample-seeded application of a pipeline (one Compose per worker thread)."""

    def __init__(self, aug: Any, tile: tuple[int, int], train: bool, enabled: bool, seed: int) -> None:
        self.args = (aug, tile, train, enabled)
        self.seed = seed
        self.local = threading.local()

    def __call__(self, image: np.ndarray, mask: np.ndarray, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        comp = getattr(self.local, "compose", None)
        if comp is None:
            comp = self.local.compose = build_augmenter(*self.args)
        comp.set_random_seed(int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        out = comp(image=image, mask=mask)
        return out["image"], out["mask"]
