"""Whether two runs of one model compute the same thing: the check `skinseg export` (Keras against ONNX
Runtime) holds before it writes anything.

Two correct FP32 computations of one network in a different order differ in their last bits: on
Xeons with AVX-512 and AMX, TensorFlow's oneDNN kernels and ONNX Runtime's MLAS kernels gave
probabilities 1.7e-4 apart, where a 1e-4 limit refused every export. A broken conversion (a wrong
layout, a lost preprocessing step, a changed activation) moves probabilities by 1e-2 and more. What
matters is that the model computes the same masks: probabilities (bounded in [0, 1], so an absolute
bound is already on their scale) agree within PROBABILITY_TOLERANCE everywhere, and at the threshold
at most MASK_TOLERANCE of the pixels change side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBABILITY_TOLERANCE = 2e-3
MASK_TOLERANCE = 1e-4  # share of pixels


@dataclass(frozen=True)
class Parity:
    max_difference: float  # largest |probability difference|
    mask_share: float  # share of pixels on different sides of the threshold

    @property
    def ok(self) -> bool:
        return self.max_difference <= PROBABILITY_TOLERANCE and self.mask_share <= MASK_TOLERANCE

    def words(self) -> str:
        return (f"largest probability difference {self.max_difference:.1e} (allowed {PROBABILITY_TOLERANCE:.0e}), "
                f"pixels on the other side of the threshold {100 * self.mask_share:.3f} % (allowed "
                f"{100 * MASK_TOLERANCE:.2f} %)")


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> Parity:
    """How far `candidate` probabilities are from `reference` ones (same shape)."""
    ref = np.asarray(reference, np.float32)
    got = np.asarray(candidate, np.float32)
    if ref.size != got.size:  # (N, h, w) and (N, h, w, 1) hold the same map
        return Parity(float("inf"), 1.0)
    got = got.reshape(ref.shape)
    if not np.isfinite(got).all():
        return Parity(float("inf"), 1.0)
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    flipped = float(np.mean((ref >= threshold) != (got >= threshold))) if ref.size else 0.0
    return Parity(diff, flipped)
