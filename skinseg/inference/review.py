"""How likely a mask is right, from what the engine already holds: the share of the lesion's area whose
probability is undecided (between 0.2 and 0.8) at the working scale. A right mask has a crisp edge (a
thin undecided band); a wrong one is blurred, patchy or split.

Chosen on the validation split among the candidates in MODEL_CARD ("Which masks are wrong", with the
figures): it ranks failures nearly as well as the flipped passes' agreement, which needs TTA and four
separate maps, while this one costs nothing and works with TTA off. The operating point belongs to the model:
export records the threshold that flags at most 15 % of its validation images (`choose_threshold`).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from skinseg.shared.metrics import FAIL_BELOW

LOW, HIGH = 0.2, 0.8  # undecided probabilities
# confidence below which a mask is flagged when neither the option nor the model (skinseg.review_threshold,
# format 4) says: the shipped model's 15th percentile on its validation split (benchmarks/review_signals.py)
DEFAULT_REVIEW_THRESHOLD = 0.65


def confidence(prob: np.ndarray, threshold: float = 0.5) -> float:
    """1 - (undecided pixels / pixels of the largest lesion component), clipped to [0, 1], at the working
    scale. No lesion and no undecided pixel: 1 (clearly empty)."""
    undecided = int(np.count_nonzero((prob > LOW) & (prob < HIGH)))
    if not undecided:
        return 1.0
    mask = (prob >= threshold).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    lesion = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
    return round(max(0.0, 1.0 - undecided / max(1, lesion)), 4)


def needs_review(value: float, threshold: float | None = None) -> bool:
    return value < (DEFAULT_REVIEW_THRESHOLD if threshold is None else threshold)


# -- the operating point (export, `skinseg review-threshold`, eval) --------------------------------------
MAX_FLAGGED = 0.15  # export's target: flag at most this share of the validation images


def choose_threshold(confidences: list[float] | np.ndarray, max_flagged: float = MAX_FLAGGED) -> float:
    """The highest threshold that flags at most `max_flagged` of these images (flagged: confidence below
    it). With one score, flagging the least confident images catches the most failures for that share."""
    c = np.sort(np.asarray(confidences, float))
    if not len(c):
        return DEFAULT_REVIEW_THRESHOLD
    k = int(np.floor(max_flagged * len(c) + 1e-9))  # images that may be flagged
    if k >= len(c):
        return 1.0  # all may be flagged: every confidence below 1 is (the metadata's upper bound)
    return float(c[k])  # flags exactly those below the (k+1)-th smallest: at most k (fewer on ties)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for `positives` (ties count half); None without both classes."""
    scores, positives = np.asarray(scores, float), np.asarray(positives, bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based ranks, ties sharing their mean
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def review_figures(confidences: list[float], jaccards: list[float], threshold: float) -> dict[str, Any]:
    """How the flag does on images with known answers: the AUROC of (1 - confidence) for failures, the
    share flagged, failures caught, the mean Jaccard of what is left, and the risk-coverage curve (mean
    Jaccard of the kept images as the least confident 0-50 % are set aside)."""
    conf, jac = np.asarray(confidences, float), np.asarray(jaccards, float)
    flagged, failed = conf < threshold, jac < FAIL_BELOW
    n = len(conf)
    order = np.argsort(conf, kind="mergesort")[::-1]  # most confident first
    curve = []
    for pct in range(0, 51, 5):
        keep = n - int(round(n * pct / 100))
        kept = float(jac[order[:keep]].mean()) if keep else None
        curve.append({"flagged_share": pct / 100, "mean_jaccard_kept": kept})
    return {
        "threshold": threshold,
        "images": n,
        "auroc_failures": auroc(-conf, failed),
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()) if n else None,
        "failures": int(failed.sum()),
        "failures_caught": int((flagged & failed).sum()),
        "failures_caught_share": float((flagged & failed).sum() / failed.sum()) if failed.any() else None,
        "mean_jaccard_all": float(jac.mean()) if n else None,
        "mean_jaccard_unflagged": float(jac[~flagged].mean()) if (~flagged).any() else None,
        "risk_coverage": curve,
    }
