"""Pictures people look at: mask overlays and contour galleries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

LESION = (255, 64, 32)  # RGB, for the predicted lesion
TRUTH = (40, 220, 60)  # RGB, for the ground truth


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = LESION, alpha: float = 0.3,
            truth: np.ndarray | None = None) -> np.ndarray:
    """Image with a translucent lesion fill and its contour (and the ground-truth contour if given)."""
    out = rgb.copy()
    m = mask.astype(bool)
    if m.any():
        out[m] = (out[m] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, thick, cv2.LINE_AA)
    if truth is not None:
        gt, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, gt, -1, TRUTH, thick, cv2.LINE_AA)
    return out


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
