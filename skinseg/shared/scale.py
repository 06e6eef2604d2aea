"""The working scale and every resize, for training, export calibration and the engine alike.

One home so a model cannot be trained on pixels resized one way and served pixels resized another:
the methods used here are recorded in the exported model (`skinseg.resize`) and the engine reads
them back from there.

Rules (docs/model-contract.md states them for clients):
- The working scale is the long side in pixels, or None for native resolution.
- working_size rounds half up: (max(1, floor(h * s + 0.5)), max(1, floor(w * s + 0.5))) with
  s = scale / max(h, w).
- An image going down to the working scale uses the model's `image_down` method (default area);
  going up, `image_up` (linear). Probabilities come back to full size with `probability` (linear).
- A training mask is resized linearly and binarized at 128, like every mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from skinseg import FROM_MODEL  # noqa: F401 - a scale option meaning: the working scale the model records
from skinseg.shared.errors import SkinsegError

METHODS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
           "nearest": cv2.INTER_NEAREST, "lanczos4": cv2.INTER_LANCZOS4}
DEFAULT_RESIZE = {"image_down": "area", "image_up": "linear", "probability": "linear"}
# one rule for the CLI, the config and model metadata; 16384 px is a 16384x10923 working image: about 2 GB
# of pixels, accumulators and probabilities, where 65536 px asked for 30 GB and failed on every image
MIN_SCALE, MAX_SCALE = 32, 16384


def method_from_config(name: str) -> str:
    """The seed's `cv2.INTER_CUBIC` spelling -> 'cubic'."""
    short = name.strip().lower().removeprefix("cv2.").removeprefix("inter_")
    if short not in METHODS:
        raise SkinsegError(f"resize method {name!r}: choose one of {', '.join(METHODS)}")
    return short


def check_scale(scale: int | None, what: str = "working scale") -> int | None:
    """A long side in pixels within sane bounds, or None (native)."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, int) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise SkinsegError(f"{what} {scale!r}: expected a long side between {MIN_SCALE} and {MAX_SCALE} px, "
                           "or native")
    return scale


def working_size(height: int, width: int, scale: int | None) -> tuple[int, int]:
    """(h, w) of an image of height x width at the working scale (None = unchanged)."""
    if not scale:
        return height, width
    s = scale / max(height, width)
    return max(1, math.floor(height * s + 0.5)), max(1, math.floor(width * s + 0.5))


def resize_image(rgb: np.ndarray, size: tuple[int, int], resize: dict[str, str] | None = None) -> np.ndarray:
    """An image to (h, w): `image_down` when it shrinks, `image_up` when it grows."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    methods = DEFAULT_RESIZE | (resize or {})
    shrink = size[0] * size[1] < rgb.shape[0] * rgb.shape[1]
    method = METHODS[methods["image_down" if shrink else "image_up"]]
    return cv2.resize(rgb, (size[1], size[0]), interpolation=method)


def to_working(rgb: np.ndarray, full_size: tuple[int, int], scale: int | None,
               resize: dict[str, str] | None = None) -> np.ndarray:
    """Pixels of an image whose full (oriented) size is `full_size`, at the working scale.

    `rgb` may be a reduced JPEG decode of that image; the target size always comes from the full size.
    """
    return resize_image(rgb, working_size(*full_size, scale), resize)


def mask_to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 0/255 (or 0/1 scaled) mask to (h, w), linear, still uint8 (binarize afterwards)."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def probability_to_full(prob: np.ndarray, size: tuple[int, int], resize: dict[str, str] | None = None,
                        out: np.ndarray | None = None) -> np.ndarray:
    """A working-scale probability map back to the image's (h, w) (into `out` when given)."""
    if prob.shape == tuple(size):
        if out is None:
            return prob
        out[...] = prob
        return out
    method = METHODS[(DEFAULT_RESIZE | (resize or {}))["probability"]]
    return cv2.resize(prob, (size[1], size[0]), dst=out, interpolation=method)


# Resizes whose output is a convex blend of nearby source pixels: a full-size value can reach a
# threshold only near a working-scale pixel that does. Cubic and Lanczos overshoot, so they get none.
CONVEX = ("linear", "area", "nearest")


def _reach(lo: int, hi: int, n_src: int, n_dst: int, margin: int) -> tuple[int, int]:
    """Destination indices [a, b) whose value can depend on source indices lo..hi (a generous bound)."""
    r = n_src / n_dst  # source pixels per destination pixel
    m = max(1.0, r) + 1
    a = math.floor((lo - 0.5 - m) / r - 0.5) - 1 - margin
    b = math.ceil((hi + 0.5 + m) / r - 0.5) + 2 + margin
    return max(0, a), min(n_dst, b)


def lesion_box(prob: np.ndarray, size: tuple[int, int], threshold: float, resize: dict[str, str] | None = None,
               blur: float = 0.0) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the full-size region outside which `prob` brought to `size` (and blurred with
    sigma `blur`) is below `threshold` by construction; None when no pixel can reach it. The whole image
    when the resize method can overshoot."""
    h, w = size
    if (DEFAULT_RESIZE | (resize or {}))["probability"] not in CONVEX:
        return 0, h, 0, w
    hot = prob >= threshold - 1e-5  # interpolation rounding stays far inside this margin
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if not rows.size:
        return None
    radius = int(round(blur * 4 * 2 + 1)) // 2 + 1 if blur > 0 else 0  # OpenCV's kernel for float images
    y0, y1 = _reach(int(rows[0]), int(rows[-1]), prob.shape[0], h, radius)
    x0, x1 = _reach(int(cols[0]), int(cols[-1]), prob.shape[1], w, radius)
    return y0 - y0 % 2, y1, x0 - x0 % 2, x1  # even origin: labelling sees the same 2x2 blocks as the full image
