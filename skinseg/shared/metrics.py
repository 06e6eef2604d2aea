"""Per-image segmentation metrics, ISIC style, with every empty-mask case defined.

Definitions (pred P, truth T, as sets of lesion pixels):
- jaccard = |P & T| / |P | T|; dice = 2|P & T| / (|P| + |T|); both are 1 when P and T are empty.
- accuracy = correct pixels / all pixels.
- sensitivity = TP / (TP + FN), 1 when T is empty (nothing to miss);
  specificity = TN / (TN + FP), 1 when the image is all lesion.
- thresholded_jaccard = jaccard if jaccard >= 0.65 else 0 (the ISIC 2018 rule).
- hd95: 95th percentile of the symmetric boundary distances in pixels (MedPy's definition; the image
  border counts as boundary); 0 when both are empty, undefined (NaN) when exactly one is empty.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

FAIL_BELOW = 0.65
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts of two boolean masks of the same shape."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in size")
    p, t = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return tp, fp, fn, p.size - tp - fp - fn


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    eroded = cv2.erode(m, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m - eroded).astype(bool)


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance between mask boundaries, in pixels."""
    p_any, t_any = bool(pred.any()), bool(truth.any())
    if not p_any and not t_any:
        return 0.0
    if p_any != t_any:
        return math.nan
    bp, bt = _boundary(pred), _boundary(truth)
    dist_to_t = cv2.distanceTransform((~bt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dist_to_p = cv2.distanceTransform((~bp).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d = np.concatenate([dist_to_t[bp], dist_to_p[bt]])
    return float(np.percentile(d, 95))


def from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    union = tp + fp + fn
    jac = tp / union if union else 1.0
    dice = 2 * tp / (2 * tp + fp + fn) if union else 1.0
    return {
        "jaccard": jac,
        "dice": dice,
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
        "specificity": tn / (tn + fp) if tn + fp else 1.0,
        "thresholded_jaccard": jac if jac >= FAIL_BELOW else 0.0,
    }


def scores(pred: np.ndarray, truth: np.ndarray, with_hd95: bool = True) -> dict[str, float]:
    """All per-image metrics for boolean masks at the ground truth's resolution."""
    tp, fp, fn, tn = confusion(pred, truth)
    out = from_counts(tp, fp, fn, tn)
    if with_hd95:
        out["hd95"] = hd95(pred, truth)
    out.update(tp=tp, fp=fp, fn=fn, tn=tn)
    return out


METRICS = ("jaccard", "dice", "accuracy", "sensitivity", "specificity", "thresholded_jaccard", "hd95")


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median/std per metric, failure share, and the pooled (dataset-level) Jaccard."""
    out: dict[str, Any] = {"scored": len(rows)}
    if not rows:
        return out
    for m in METRICS:
        vals = np.array([float(r[m]) for r in rows if r.get(m) not in (None, "")], np.float64)
        vals = vals[~np.isnan(vals)]
        if len(vals):
            out[m] = {"mean": float(vals.mean()), "median": float(np.median(vals)), "std": float(vals.std()),
                      "n": int(len(vals))}
    jac = np.array([float(r["jaccard"]) for r in rows])
    out["failure_rate"] = float((jac < FAIL_BELOW).mean())
    tp, fp, fn = (sum(int(r[k]) for r in rows) for k in ("tp", "fp", "fn"))
    out["pooled_jaccard"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return out


def mean_jaccard(preds: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Mean per-image Jaccard of predicted masks against reference masks of the same images."""
    return float(np.mean([scores(p, t, with_hd95=False)["jaccard"] for p, t in zip(preds, truths, strict=True)]))
