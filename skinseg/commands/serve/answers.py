"""What `skinseg serve` answers for one image: the figures of a results.csv row, the model, and the mask
as a PNG, COCO run-length encoding or polygons (and the overlay JPEG when asked)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np

MASK_FORMATS = ("png", "rle", "polygon")


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


def mask_field(mask: np.ndarray, png: bytes, fmt: str) -> Any:
    if fmt == "rle":
        return coco_rle(mask)
    if fmt == "polygon":
        return polygons(mask)
    return base64.b64encode(png).decode("ascii")


def figures(row: dict[str, Any]) -> dict[str, Any]:
    """A results.csv row's figures as JSON values (bbox as [x, y, w, h], empty when there is no lesion)."""
    bbox = [int(v) for v in row["bbox"].split()] if row["bbox"] else []
    return {"width": row["width"], "height": row["height"], "lesion_area_px": row["lesion_area_px"],
            "lesion_fraction": row["lesion_fraction"], "bbox": bbox, "components": row["components"],
            "tiles": row["tiles"]}


def headers(row: dict[str, Any], seconds: float, model_sha: str) -> dict[str, str]:
    """The figures as response headers, for answers that are the mask PNG itself."""
    return {"X-Skinseg-Width": str(row["width"]), "X-Skinseg-Height": str(row["height"]),
            "X-Skinseg-Lesion-Area-Px": str(row["lesion_area_px"]),
            "X-Skinseg-Lesion-Fraction": str(row["lesion_fraction"]), "X-Skinseg-Bbox": row["bbox"],
            "X-Skinseg-Components": str(row["components"]), "X-Skinseg-Tiles": str(row["tiles"]),
            "X-Skinseg-Seconds": f"{seconds:.3f}", "X-Skinseg-Model-Sha256": model_sha}
