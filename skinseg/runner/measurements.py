"""What a clinician measures on a mask: the lesion's largest diameter (maximum Feret diameter, the D of
the dermoscopy ABCD rule) and, with a known scale, its area and diameter in millimetres."""

from __future__ import annotations

import math

import cv2
import numpy as np

CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]], np.float32)


def max_feret(mask: np.ndarray, box: tuple[int, int, int, int] | None = None, components: int | None = None) -> float:
    """The largest component's maximum Feret diameter in pixels: the longest distance between two points
    of its outline, taken along pixel edges (a w x h rectangle measures sqrt(w^2 + h^2)). `box` (y0, y1,
    x0, x1) bounds the lesion pixels; `components` = 1 says there is only one (nothing to label)."""
    h, w = mask.shape
    y0, y1, x0, x1 = box or (0, h, 0, w)
    crop = mask[y0:y1, x0:x1]
    m = crop.view(np.uint8) if crop.dtype == bool else (crop > 0).astype(np.uint8)
    if not m.size or (components is None and not cv2.countNonZero(m)) or components == 0:
        return 0.0
    if components != 1:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n > 2:
            m = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    points = cv2.convexHull(np.concatenate(contours)).reshape(-1, 2).astype(np.float32)  # centres' hull first
    corners = (points[:, None, :] + CORNERS[None]).reshape(-1, 2)  # then the pixels' corners around it
    hull = cv2.convexHull(corners).reshape(-1, 2).astype(np.float64)
    d = hull[:, None, :] - hull[None, :, :]
    return float(math.sqrt(float((d**2).sum(-1).max())))


def in_millimetres(area_px: int, diameter_px: float, spacing: float | None) -> tuple[float | None, float | None]:
    """(area in mm^2, diameter in mm) at `spacing` mm per pixel; (None, None) when no scale is known: a
    size is never guessed."""
    if spacing is None:
        return None, None
    return round(area_px * spacing * spacing, 4), round(diameter_px * spacing, 3)


def check_spacing(spacing: float | None, name: str = "--pixel-spacing") -> float | None:
    """A pixel spacing in mm per pixel: finite, above 0, at most 10 (a dermatoscope images about 0.005-0.1)."""
    from skinseg.shared.errors import SkinsegError

    if spacing is None:
        return None
    if isinstance(spacing, bool) or not isinstance(spacing, int | float) or not math.isfinite(spacing) or \
            not 0 < spacing <= 10:
        raise SkinsegError(f"{name} {spacing!r}: millimetres per pixel, above 0 and at most 10 (dermoscopy images "
                           "are about 0.005 to 0.1)")
    return float(spacing)
