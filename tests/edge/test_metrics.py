"""Metrics against hand-computed cases and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skinseg.shared.metrics import aggregate, confusion, from_counts, hd95, mean_jaccard, scores


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


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_hd95_equals_the_brute_force_on_random_masks_touching_the_border(data):
    """Random masks reach the image's edge, where the boundary rule (zero outside the image) matters;
    0/255 masks give the same figure as bool ones."""
    a = data.draw(arrays(bool, st.tuples(st.integers(2, 16), st.integers(2, 16))))
    b = data.draw(arrays(bool, a.shape))
    if a.any() and b.any():
        assert hd95(a, b) == pytest.approx(_hd95_brute_force(a, b), abs=1e-4)
        assert hd95(a.astype(np.uint8) * 255, b.astype(np.uint8) * 255) == pytest.approx(hd95(a, b))


def test_confusion_counts_and_a_size_mismatch_names_both_sizes():
    p, t = _m((4, 5), (0, 2, 0, 5)), _m((4, 5), (1, 4, 0, 5))
    assert confusion(p, t) == (5, 5, 10, 0)
    s = scores(p, t)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (5, 5, 10, 0)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        confusion(p, np.zeros((5, 4), bool))


def test_from_counts_edges_by_hand():
    exact = from_counts(13, 4, 3, 80)  # Jaccard 13/20 = 0.65 exactly: not a failure, kept by the ISIC rule
    assert exact["jaccard"] == 0.65 and exact["thresholded_jaccard"] == 0.65
    assert from_counts(12, 5, 3, 80)["thresholded_jaccard"] == 0.0  # 0.6
    assert from_counts(2, 3, 0, 3)["specificity"] == 0.5  # tn = fp: still tn / (tn + fp)
    assert from_counts(2, 0, 0, 0)["specificity"] == 1.0 and from_counts(0, 0, 0, 4)["sensitivity"] == 1.0
    assert from_counts(1, 1, 2, 6) == {"jaccard": 0.25, "dice": 0.4, "accuracy": 0.7, "sensitivity": 1 / 3,
                                       "specificity": 6 / 7, "thresholded_jaccard": 0.0}


def test_aggregate_by_hand():
    rows = [{"jaccard": 0.65, "dice": 0.8, "accuracy": 1, "sensitivity": 1, "specificity": 1,
             "thresholded_jaccard": 0.65, "hd95": "", "tp": 13, "fp": 4, "fn": 3},
            {"jaccard": 0.2, "dice": 0.4, "accuracy": 0.5, "sensitivity": 0.5, "specificity": 0.5,
             "thresholded_jaccard": 0.0, "hd95": 3.0, "tp": 1, "fp": 2, "fn": 2},
            {"jaccard": 0.5, "dice": 0.6, "accuracy": 0.9, "sensitivity": 0.7, "specificity": 0.9,
             "thresholded_jaccard": 0.0, "hd95": math.nan, "tp": 0, "fp": 0, "fn": 0}]
    agg = aggregate(rows)
    assert agg["jaccard"] == {"mean": pytest.approx(1.35 / 3), "median": 0.5,
                              "std": pytest.approx(float(np.std([0.65, 0.2, 0.5]))), "n": 3}
    assert agg["hd95"] == {"mean": 3.0, "median": 3.0, "std": 0.0, "n": 1}  # "" and NaN left out
    assert agg["failure_rate"] == pytest.approx(2 / 3)  # 0.65 is not a failure; 0.2 and 0.5 are
    assert agg["pooled_jaccard"] == pytest.approx(14 / 25)  # 14 / (14 + 6 + 5)
    empty = [{**rows[2], "jaccard": 1.0}]
    assert aggregate(empty)["pooled_jaccard"] == 1.0 and aggregate([]) == {"scored": 0}


def test_mean_jaccard_by_hand():
    a, b = _m((4, 4), (0, 2, 0, 4)), _m((4, 4), (0, 4, 0, 4))
    assert mean_jaccard([a, b], [a, a]) == pytest.approx((1.0 + 0.5) / 2)
    assert mean_jaccard([np.zeros((3, 3), bool)], [np.zeros((3, 3), bool)]) == 1.0


def test_pooled_jaccard_and_mean_jaccard_edges():
    base = {"jaccard": 0.25, "dice": 0.4, "accuracy": 1, "sensitivity": 1, "specificity": 1,
            "thresholded_jaccard": 0, "hd95": 1.0}
    assert aggregate([base | {"tp": 1, "fp": 1, "fn": 2}])["pooled_jaccard"] == 0.25  # tp + fp = fn
    assert aggregate([base | {"tp": 1, "fp": 2, "fn": 1}])["pooled_jaccard"] == 0.25  # tp + fn = fp
    a = _m((4, 4), (0, 2, 0, 4))
    with pytest.raises(ValueError):
        mean_jaccard([a], [a, a])  # one list shorter than the other is a caller's error, not a shorter mean
