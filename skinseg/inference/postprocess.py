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


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count incl. background, labels, area per label) of 8-connected components. 16-bit labels and a
    histogram are several times faster than OpenCV's statistics pass; the labels are the same."""
    m = mask.astype(np.uint8, copy=False) if mask.dtype != bool else mask.view(np.uint8)
    try:
        n, labels = cv2.connectedComponents(m, connectivity=8, ltype=cv2.CV_16U)
        areas = cv2.calcHist([labels], [0], None, [n], [0, n]).ravel().astype(np.int64)
    except cv2.error:  # more than 65535 components
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    return n, labels, areas


def keep_components(mask: np.ndarray, keep: str = "largest", min_area: int = 0) -> np.ndarray:
    """Keep the largest 8-connected component (the first in raster order on a tie), or all components
    of at least `min_area` pixels."""
    n, labels, areas = _labels(mask)
    if n <= 1:
        return mask.astype(bool)
    areas = areas[1:]
    if keep == "largest":
        best = int(np.argmax(areas))
        if areas[best] < min_area:
            return np.zeros(mask.shape, bool)
        tied = np.flatnonzero(areas == areas[best]) + 1
        if len(tied) > 1:  # OpenCV's label order is not raster order: the contract's tie rule, applied here
            flat = labels.ravel()
            return labels == min(tied, key=lambda label: int(np.argmax(flat == label)))
        return labels == best + 1
    wanted = [i + 1 for i, a in enumerate(areas) if a >= min_area]
    if len(wanted) == n - 1:
        return labels > 0
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
    cv2.floodFill(pad, None, (0, 0), 2, flags=4)
    return pad[1:-1, 1:-1] != 2


def postprocess(prob: np.ndarray, opts: PostProcess, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Binary lesion mask (bool HxW) from a probability map.

    `box` (y0, y1, x0, x1), from `scale.lesion_box`, bounds where the probability can reach the
    threshold: thresholding, components and holes then run inside it only, with the same result (all
    outside is background, so components are whole inside it and background touching its edge reaches
    the image's edge).
    """
    if opts.blur > 0:
        prob = cv2.GaussianBlur(prob, (0, 0), sigmaX=opts.blur)
    h, w = prob.shape
    y0, y1, x0, x1 = box or (0, h, 0, w)
    mask = prob[y0:y1, x0:x1] >= opts.threshold
    if opts.keep == "largest" or opts.min_area > 0:
        mask = keep_components(mask, opts.keep, opts.min_area)
    if opts.fill_holes:
        mask = fill_holes(mask)
    if (y0, y1, x0, x1) == (0, h, 0, w):
        return mask
    full = np.zeros((h, w), bool)
    full[y0:y1, x0:x1] = mask
    return full


def count_components(mask: np.ndarray) -> int:
    """8-connected lesion components of a binary mask."""
    m = mask.astype(np.uint8, copy=False) if mask.dtype != bool else mask.view(np.uint8)
    return cv2.connectedComponents(m, connectivity=8)[0] - 1 if m.size else 0


def mask_stats(mask: np.ndarray, box: tuple[int, int, int, int] | None = None,
               components: int | None = None) -> dict[str, Any]:
    """Area, fraction, bounding box ((x, y, w, h); None without lesion) and component count of a binary
    mask; `box` (y0, y1, x0, x1) bounds where its lesion pixels are (counting inside it only gives the
    same figures); `components`, when the caller knows it, saves labelling the mask again."""
    h, w = mask.shape
    y0, y1, x0, x1 = box or (0, h, 0, w)
    crop = mask[y0:y1, x0:x1]
    m = crop.view(np.uint8) if crop.dtype == bool else (crop > 0).view(np.uint8)
    area = int(cv2.countNonZero(m)) if m.size else 0
    n = (count_components(m) if components is None else components) if area else 0
    bx, by, bw, bh = cv2.boundingRect(m) if area else (0, 0, 0, 0)
    return {
        "lesion_area_px": area,
        "lesion_fraction": round(area / mask.size, 6) if mask.size else 0.0,
        "bbox": (int(bx + x0), int(by + y0), int(bw), int(bh)) if area else None,
        "components": int(n),
    }
