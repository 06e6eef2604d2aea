"""A mask's encodings, each in one place: PNG bytes, COCO run-length encoding, outer polygons, and the
overlay JPEG of the image it belongs to."""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import LoadedImage, encode, load_image
from skinseg.shared.render import display_size, overlay_at

AUTO_OVERLAY_MAX = 2048  # the long-side cap of an overlay drawn from the pixels already decoded
AUTO_OVERLAY_MIN = 768  # and its floor: a 1/8 decode (324 px for 2592) is enlarged so the outline, drawn
# from the full-size mask, shows its detail; enlarging costs a few ms, a second decode costs the first's


def mask_png(mask: np.ndarray) -> bytes:
    """A standard 8-bit single-channel 0/255 PNG (what infer writes and the service answers)."""
    return encode(".png", mask)


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed run-length encoding (what pycocotools' `decode` reads): runs over the mask in
    column-major order, starting with background, each count stored as the difference from the count two
    before, in 5-bit groups offset into printable ASCII."""
    h, w = mask.shape
    flat = mask.T.reshape(-1).astype(np.int8)  # column-major
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]  # runs start with background
    out = bytearray()
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append((c | 0x20 if more else c) + 48)
    return {"size": [h, w], "counts": out.decode("ascii")}


def polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """Outer contours as [[x, y], ...] lists (pixel corners as OpenCV traces them), one per component."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in contours]


def check_overlay_max(long_side: int | None) -> None:
    """--overlay-max: None (automatic), 0 (full size) or a long side in px; one rule for every command."""
    if long_side is not None and long_side < 0:
        raise SkinsegError(f"--overlay-max {long_side}: must be 0 (full size) or a long side in px")


def overlay_jpeg(source: str | os.PathLike[str] | bytes | bytearray, loaded: LoadedImage, mask: np.ndarray,
                 long_side: int | None = None) -> bytes:
    """The overlay JPEG of an image (its path or bytes). `long_side` None (default): drawn on the pixels
    the model's decode already holds (decode once), 768-2048 px on the long side (never above the
    image's own size); N: at most N px (0 = full size), decoding the JPEG again at the reduction that
    size needs when the model's decode is smaller."""
    rgb = loaded.rgb
    if long_side is None:
        side = min(max(max(rgb.shape[:2]), AUTO_OVERLAY_MIN), AUTO_OVERLAY_MAX)
        return encode(".jpg", overlay_at(rgb, mask, display_size(mask.shape, side)))
    size = display_size(mask.shape, long_side)
    if max(rgb.shape[:2]) < max(size) and loaded.reduce > 1:
        rgb = load_image(source, max(size)).rgb
    return encode(".jpg", overlay_at(rgb, mask, size))
