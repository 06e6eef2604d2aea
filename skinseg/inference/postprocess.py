"""From a probability map to a clean lesion mask: smooth, threshold, keep components, fill holes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import postprocess_problem


@dataclass
class PostProcess:
    """Post-processing options (the seed's [mask] blur / threshold, plus component handling).

    Attributes:
        threshold: probability at or above which a pixel is lesion, in (0, 1].
        blur: Gaussian smoothing of the probability before thresholding, sigma in pixels of the
            output image (0 = off). The seed's `blur = True` maps to sigma 2.
        keep: 'largest' keeps the largest connected component (one lesion per dermoscopy image);
            'all' keeps every component of at least `min_area` pixels.
        min_area: smallest component kept with keep='all' (pixels).
        fill_holes: fill background regions enclosed by lesion.
    """

    threshold: float = 0.5
    blur: float = 0.0
    keep: str = "largest"
    min_area: int = 0
    fill_holes: bool = True

    def __post_init__(self) -> None:
        for name in ("threshold", "blur", "keep", "min_area", "fill_holes"):
            value = getattr(self, name)
            if why := postprocess_problem(name, value):
                raise SkinsegError(f"{name} {value!r}: {why}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def keep_components(mask: np.ndarray, keep: str = "largest", min_area: int = 0) -> np.ndarray:
    """Keep the largest 8-connected component, or all components of at least `min_area` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if keep == "largest":
        wanted = [int(np.argmax(areas)) + 1] if areas.max() >= min_area else []
    else:
        wanted = [i + 1 for i, a in enumerate(areas) if a >= min_area]
    lut = np.zeros(n, bool)
    lut[wanted] = True
    return lut[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border (4-connected flood fill from
    outside; uint8 buffers only, a third of the memory of labelling the background)."""
    h, w = mask.shape
    if not mask.any():
        return mask.astype(bool)
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    cv2.floodFill(pad, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2, flags=4)
    return pad[1:-1, 1:-1] != 2


def postprocess(prob: np.ndarray, opts: PostProcess) -> np.ndarray:
    """Binary lesion mask (bool HxW) from a probability map."""
    if opts.blur > 0:
        prob = cv2.GaussianBlur(prob, (0, 0), sigmaX=opts.blur)
    mask = prob >= opts.threshold
    if opts.keep == "largest" or opts.min_area > 0:
        mask = keep_components(mask, opts.keep, opts.min_area)
    if opts.fill_holes:
        mask = fill_holes(mask)
    return mask


def mask_stats(mask: np.ndarray) -> dict[str, Any]:
    """Area, fraction, bounding box (x y w h) and component count of a binary mask."""
    m = mask.astype(np.uint8)
    area = int(m.sum())
    n = cv2.connectedComponents(m, connectivity=8)[0] - 1 if area else 0
    bbox = " ".join(map(str, cv2.boundingRect(m))) if area else ""
    return {
        "lesion_area_px": area,
        "lesion_fraction": round(area / m.size, 6) if m.size else 0.0,
        "bbox": bbox,
        "components": int(n),
    }
