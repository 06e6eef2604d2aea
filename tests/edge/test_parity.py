"""The export parity rule: the same computation in another order passes on every CPU, a broken one is
refused, and the refusal says what was compared."""

import numpy as np

from skinseg.inference.parity import MASK_TOLERANCE, PROBABILITY_TOLERANCE, compare


def _probabilities(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-rng.normal(0, 3, (16, 64, 64, 1)))).astype(np.float32)


def test_reordered_fp32_arithmetic_passes_as_on_avx512_amx_xeons():
    ref = _probabilities()
    noisy = ref + np.random.default_rng(1).uniform(-1.73e-4, 1.73e-4, ref.shape).astype(np.float32)
    found = compare(ref, np.clip(noisy, 0, 1)[..., 0])  # (N, h, w) against (N, h, w, 1): the same map
    assert found.ok and 1e-4 < found.max_difference < 2e-4 and found.mask_share <= MASK_TOLERANCE


def test_a_broken_conversion_is_refused_with_what_was_compared():
    ref = _probabilities()
    shifted = compare(ref, np.clip(ref + 0.02, 0, 1))
    assert not shifted.ok and "largest probability difference 2.0e-02" in shifted.words()
    flipped = ref.copy()
    flipped.reshape(-1)[: int(ref.size * 0.001)] = 1 - flipped.reshape(-1)[: int(ref.size * 0.001)]
    found = compare(ref, flipped)
    assert not found.ok and found.mask_share > MASK_TOLERANCE and "other side of the threshold" in found.words()
    assert not compare(ref, np.full_like(ref, np.nan)).ok and not compare(ref, ref[:8]).ok


def test_the_limits_sit_between_reordering_and_breakage():
    assert 1.73e-4 < PROBABILITY_TOLERANCE < 1e-2 and MASK_TOLERANCE <= 1e-3
