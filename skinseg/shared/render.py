"""Pictures people look at: mask overlays and contour galleries."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np

LESION = (255, 64, 32)  # RGB, for the predicted lesion
TRUTH = (40, 220, 60)  # RGB, for the ground truth


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = LESION, alpha: float = 0.3,
            truth: np.ndarray | None = None) -> np.ndarray:
    """Image with a translucent lesion fill and its contour (and the ground-truth contour if given)."""
    m = mask.astype(bool)
    out = rgb.copy()
    if m.any():
        cv2.copyTo(cv2.LUT(rgb, _blend_table(color, alpha)), m.view(np.uint8), out)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thick, cv2.LINE_AA)
    if truth is not None:
        gt, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, gt, -1, TRUTH, thick, cv2.LINE_AA)
    return out


@functools.lru_cache(maxsize=16)
def _blend_table(color: tuple[int, int, int], alpha: float) -> np.ndarray:
    """value -> value * (1 - alpha) + color * alpha, truncated, per channel (a lookup, not per-pixel floats)."""
    v = np.arange(256, dtype=np.float64)[:, None]
    return (v * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)[:, None, :]  # 256x1x3 for cv2.LUT


def display_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(h, w) of an image of `size` shown at most `long_side` px on its long side (0 = as it is)."""
    h, w = size
    s = min(1.0, long_side / max(h, w)) if long_side else 1.0
    return max(1, round(h * s)), max(1, round(w * s))


def overlay_at(rgb: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The overlay of a full-size mask on `rgb` (any decode of the same image) at (h, w) `size`."""
    oh, ow = size
    if rgb.shape[:2] != size:
        s = oh * ow / (rgb.shape[0] * rgb.shape[1])
        # area averaging when shrinking by more than 2x; beyond that linear loses detail, within it is as good
        method = cv2.INTER_AREA if s < 0.25 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (ow, oh), interpolation=method)
    if mask.shape != size:
        small = cv2.resize(mask.astype(bool, copy=False).view(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST)
        mask = small.view(bool)
    return overlay(rgb, mask)


def fit(rgb: np.ndarray, long_side: int, upscale: bool = False) -> np.ndarray:
    """Resize so the long side is `long_side` (only down, unless `upscale`)."""
    h, w = rgb.shape[:2]
    s = long_side / max(h, w)
    if s == 1 or (s > 1 and not upscale):
        return rgb
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def grid(cells: list[np.ndarray], labels: list[str], cols: int = 4, cell: int = 256) -> np.ndarray:
    """Gallery of RGB images letterboxed into cell x cell squares with a caption under each."""
    cols = max(1, min(cols, len(cells)))
    rows = max(1, -(-len(cells) // cols))
    cap = 22
    out = np.full((rows * (cell + cap), cols * cell, 3), 255, np.uint8)
    for i, (img, label) in enumerate(zip(cells, labels, strict=True)):
        r, c = divmod(i, cols)
        small = fit(img, cell, upscale=True)
        y0 = r * (cell + cap) + (cell - small.shape[0]) // 2
        x0 = c * cell + (cell - small.shape[1]) // 2
        out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        # Hershey fonts draw ASCII only, and OpenCV crashes on a str holding surrogates (non-UTF-8 names)
        text = label[:40].encode("ascii", "replace").decode("ascii")
        cv2.putText(out, text, (c * cell + 4, r * (cell + cap) + cell + 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return out


def save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically, and closed."""
    import io

    import matplotlib.pyplot as plt

    from skinseg.shared import files

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    files.write_bytes(path, buf.getvalue())
