"""How likely a mask is right, from what the engine already holds: the share of the lesion's area whose
probability is undecided (between 0.2 and 0.8) at the working scale. A right mask has a crisp edge (a
thin undecided band); a wrong one is blurred, patchy or split.

Chosen on the validation split among the candidates in MODEL_CARD ("Which masks are wrong"): AUROC for
failed masks (Jaccard < 0.65) 0.944 on validation and 0.915 on test, next to the flipped passes'
agreement (0.959 / 0.932), which needs TTA and four separate maps; this one costs nothing, and works
with TTA off. The operating point: flag the least confident 15 % of the validation images.
"""

from __future__ import annotations

import cv2
import numpy as np

LOW, HIGH = 0.2, 0.8  # undecided probabilities
# confidence below which a mask is flagged for review, for the shipped models (the 15th percentile on
# their validation split, benchmarks/review_signals.py); other models use it too until they record theirs
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
