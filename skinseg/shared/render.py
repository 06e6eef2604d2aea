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
    if m.any():  # blend inside the lesion's box only: the rest of the picture is untouched anyway
        x, y, w, h = cv2.boundingRect(m.view(np.uint8))
        box = (slice(y, y + h), slice(x, x + w))
        cv2.copyTo(cv2.LUT(rgb[box], _blend_table(color, alpha)), m[box].view(np.uint8), out[box])
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


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.55,
          color: tuple[int, int, int] = (20, 20, 20)) -> None:
    # Hershey fonts draw ASCII only, and OpenCV crashes on a str holding surrogates (non-UTF-8 names)
    safe = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(img, safe, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def grid(cells: list[np.ndarray], labels: list[str], cols: int = 4, cell: int = 256,
         legend: list[tuple[tuple[int, int, int] | None, str]] | None = None) -> np.ndarray:
    """Gallery of RGB images, each fitted to `cell` px wide with its caption right under it; rows are as
    tall as their tallest image (no blank bands); an optional legend line of colour swatches on top."""
    cols = max(1, min(cols, len(cells)))
    fitted = [fit(img, cell, upscale=True) if img.shape[1] != cell else img for img in cells]
    fitted = [cv2.resize(f, (cell, max(1, round(f.shape[0] * cell / f.shape[1])))) if f.shape[1] != cell else f
              for f in fitted]
    rows = [fitted[i : i + cols] for i in range(0, len(fitted), cols)]
    cap, top, gap = 26, (34 if legend else 0), 6
    heights = [max(f.shape[0] for f in row) for row in rows]
    out = np.full((top + sum(h + cap + gap for h in heights), cols * cell + (cols - 1) * gap, 3), 255, np.uint8)
    x = 8
    for colour, text in legend or []:  # colour None: a note without a swatch
        if colour is not None:
            cv2.rectangle(out, (x, 10), (x + 26, 24), colour, -1)
            x += 34
        _text(out, text, (x, 23), 0.6)
        x += 11 * len(text) + 30
    y, k = top, 0
    for row, h in zip(rows, heights, strict=True):
        for c, img in enumerate(row):
            x0 = c * (cell + gap)
            out[y : y + img.shape[0], x0 : x0 + cell] = img
            _text(out, labels[k][:44], (x0 + 4, y + img.shape[0] + 19))
            k += 1
        y += h + cap + gap
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
