"""Metrics against hand-computed cases and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skinseg.shared.metrics import aggregate, hd95, scores


def _m(shape, *boxes):
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_perfect_and_both_empty():
    a = _m((10, 10), (2, 5, 2, 5))
    s = scores(a, a)
    assert s["jaccard"] == s["dice"] == s["accuracy"] == s["sensitivity"] == s["specificity"] == 1.0
    assert s["hd95"] == 0.0
    e = np.zeros((10, 10), bool)
    s = scores(e, e)
    assert s["jaccard"] == 1.0 and s["dice"] == 1.0 and s["sensitivity"] == 1.0 and s["hd95"] == 0.0


def test_one_side_empty():
    a = _m((10, 10), (0, 2, 0, 2))
    e = np.zeros((10, 10), bool)
    s = scores(a, e)  # prediction where there is no lesion
    assert s["jaccard"] == 0 and s["dice"] == 0 and s["sensitivity"] == 1.0 and s["specificity"] == 0.96
    assert math.isnan(s["hd95"])
    s = scores(e, a)  # lesion missed
    assert s["jaccard"] == 0 and s["sensitivity"] == 0.0 and s["specificity"] == 1.0


def test_disjoint_and_partial_overlap():
    a = _m((10, 20), (0, 4, 0, 4))  # 16 px
    b = _m((10, 20), (0, 4, 10, 14))
    s = scores(a, b)
    assert s["jaccard"] == 0 and s["dice"] == 0 and s["accuracy"] == pytest.approx(1 - 32 / 200)
    c = _m((10, 20), (0, 4, 2, 6))  # overlap 8 px, union 24
    s = scores(c, a)
    assert s["jaccard"] == pytest.approx(8 / 24) and s["dice"] == pytest.approx(16 / 32)
    assert s["sensitivity"] == pytest.approx(8 / 16) and s["specificity"] == pytest.approx(176 / 184)
    assert s["thresholded_jaccard"] == 0.0
    d = _m((10, 20), (0, 4, 0, 5))  # jaccard 16/20 = 0.8 >= 0.65 stays
    assert scores(d, a)["thresholded_jaccard"] == pytest.approx(0.8)


def test_hausdorff_on_known_shapes():
    a = _m((50, 50), (10, 20, 10, 20))
    b = _m((50, 50), (10, 20, 15, 25))  # shifted 5 px right
    assert hd95(a, b) == pytest.approx(5.0, abs=0.01)
    big = _m((60, 60), (10, 50, 10, 50))
    small = _m((60, 60), (20, 40, 20, 40))  # nested squares: every boundary distance is in [10, 10*sqrt(2)]
    assert 10.0 <= hd95(big, small) <= 10 * math.sqrt(2) + 1e-6
    dot = _m((9, 9), (4, 5, 4, 5))
    assert hd95(dot, dot) == 0.0


def test_aggregate_pooled_and_failures():
    rows = [scores(_m((10, 10), (0, 5, 0, 5)), _m((10, 10), (0, 5, 0, 5))),
            scores(_m((10, 10), (0, 5, 0, 5)), _m((10, 10), (5, 10, 5, 10)))]
    agg = aggregate(rows)
    assert agg["scored"] == 2 and agg["failure_rate"] == 0.5
    assert agg["jaccard"]["mean"] == 0.5 and agg["pooled_jaccard"] == pytest.approx(25 / 75)


masks = arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_properties_bounds_symmetry_jaccard_le_dice(data):
    a = data.draw(masks)
    b = data.draw(arrays(bool, a.shape))
    s, t = scores(a, b), scores(b, a)
    for k in ("jaccard", "dice", "accuracy", "sensitivity", "specificity", "thresholded_jaccard"):
        assert 0.0 <= s[k] <= 1.0
    assert s["jaccard"] <= s["dice"] + 1e-12
    assert s["jaccard"] == pytest.approx(t["jaccard"]) and s["dice"] == pytest.approx(t["dice"])
    assert (math.isnan(s["hd95"]) and math.isnan(t["hd95"])) or s["hd95"] == pytest.approx(t["hd95"])
    assert s["dice"] == pytest.approx(2 * s["jaccard"] / (1 + s["jaccard"]))


def _hd95_brute_force(a: np.ndarray, b: np.ndarray) -> float:
    """MedPy's hd95 written independently: boundaries by a numpy 4-neighbour erosion (zero outside), every
    boundary-to-boundary Euclidean distance by broadcasting, the 95th percentile of both directions."""
    def boundary(m: np.ndarray) -> np.ndarray:
        p = np.pad(m, 1)
        eroded = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        return m & ~eroded

    pa, pb = np.argwhere(boundary(a)).astype(float), np.argwhere(boundary(b)).astype(float)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


@pytest.mark.parametrize("seed", range(12))
def test_hd95_equals_an_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :64]
    masks = []
    for _ in range(2):
        cy, cx, ry, rx = rng.uniform(12, 36), rng.uniform(16, 48), rng.uniform(4, 14), rng.uniform(4, 18)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        blob[rng.integers(0, 48, 6), rng.integers(0, 64, 6)] ^= True  # stray pixels and holes
        masks.append(blob)
    assert hd95(*masks) == pytest.approx(_hd95_brute_force(*masks), abs=1e-4)


def test_hd95_of_nested_squares_is_the_exact_figure():
    big, small = _m((60, 60), (10, 50, 10, 50)), _m((60, 60), (20, 40, 20, 40))
    assert hd95(big, small) == pytest.approx(_hd95_brute_force(big, small), abs=1e-4)
