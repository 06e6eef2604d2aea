"""Post-processing: small cases by hand, and every function against a plain breadth-first reference
(no OpenCV) on random masks and probability maps."""

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skinseg.inference import postprocess as pp
from skinseg.inference.postprocess import PostProcess, fill_holes, keep_components, mask_stats, postprocess
from skinseg.shared.errors import SkinsegError


def _two_blobs():
    m = np.zeros((50, 80), bool)
    m[5:25, 5:25] = True  # 400 px
    m[30:35, 60:66] = True  # 30 px
    return m


def test_keep_largest_drops_small_component():
    out = keep_components(_two_blobs(), "largest")
    assert out.sum() == 400 and not out[32, 62]


def test_keep_all_with_min_area():
    m = _two_blobs()
    assert keep_components(m, "all", 0).sum() == 430
    assert keep_components(m, "all", 31).sum() == 400


def test_fill_holes_fills_enclosed_but_not_border_background():
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    m[15:20, 15:20] = False
    filled = fill_holes(m)
    assert filled[17, 17] and not filled[0, 0] and filled.sum() == 400


def test_postprocess_threshold_and_blur():
    prob = np.zeros((60, 60), np.float32)
    prob[20:40, 20:40] = 0.9
    prob[5, 5] = 0.99  # a speck
    assert postprocess(prob, PostProcess(threshold=0.5)).sum() == 400
    assert not postprocess(prob, PostProcess(threshold=0.5, blur=2.0))[5, 5]


def test_empty_probability_gives_empty_mask():
    out = postprocess(np.zeros((10, 10), np.float32), PostProcess())
    assert not out.any()
    assert mask_stats(out) == {"lesion_area_px": 0, "lesion_fraction": 0.0, "bbox": None, "components": 0}


def test_mask_stats():
    s = mask_stats(_two_blobs())
    assert s["lesion_area_px"] == 430 and s["components"] == 2 and s["bbox"] == (5, 5, 61, 30)


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"threshold": 0}, {"keep": "biggest"}, {"blur": -1}])
def test_bad_options_are_user_errors(kwargs):
    with pytest.raises(SkinsegError):
        PostProcess(**kwargs)


# -- against an independent reference: plain breadth-first labelling, no OpenCV ----------------------------


N8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
N4 = [(-1, 0), (1, 0), (0, -1), (0, 1)]


def ref_components(mask: np.ndarray, steps=N8) -> list[list[tuple[int, int]]]:
    """Components of the True pixels, each a list of (y, x), in raster order of their first pixel."""
    h, w = mask.shape
    seen = np.zeros((h, w), bool)
    comps = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                comp, todo = [], deque([(y, x)])
                while todo:
                    cy, cx = todo.popleft()
                    comp.append((cy, cx))
                    for dy, dx in steps:
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            todo.append((ny, nx))
                comps.append(comp)
    return comps


def _paint(shape, comps) -> np.ndarray:
    out = np.zeros(shape, bool)
    for comp in comps:
        for y, x in comp:
            out[y, x] = True
    return out


def ref_fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels 4-connected to the border stay background; the rest is lesion."""
    outside = [c for c in ref_components(~mask, N4) if any(y in (0, mask.shape[0] - 1) or x in (0, mask.shape[1] - 1)
                                                           for y, x in c)]
    return ~_paint(mask.shape, outside)


masks = arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 14)))


@settings(max_examples=150, deadline=None)
@given(masks, st.integers(0, 6))
def test_components_and_holes_match_a_plain_breadth_first_reference(mask, min_area):
    comps = ref_components(mask)
    assert pp.count_components(mask) == len(comps)
    assert pp.count_components(mask.astype(np.uint8) * 255) == len(comps)  # 0/255 masks count the same
    largest = max(comps, key=len) if comps else []  # max() keeps the first of equals: raster order
    want = _paint(mask.shape, [largest] if len(largest) >= min_area else [])
    got = keep_components(mask, "largest", min_area)
    assert got.dtype == bool and got.shape == mask.shape and np.array_equal(got, want)
    want_all = _paint(mask.shape, [c for c in comps if len(c) >= min_area])
    for given_mask in (mask, mask.astype(np.uint8)):
        got = keep_components(given_mask, "all", min_area)
        assert got.dtype == bool and got.shape == mask.shape and np.array_equal(got, want_all)
    filled = fill_holes(mask)
    assert filled.dtype == bool and filled.shape == mask.shape and np.array_equal(filled, ref_fill_holes(mask))


@settings(max_examples=150, deadline=None)
@given(masks, st.data())
def test_mask_stats_match_a_hand_count_with_and_without_a_box(mask, data):
    ys, xs = np.nonzero(mask)
    comps = ref_components(mask)
    want = {"lesion_area_px": int(mask.sum()), "lesion_fraction": round(mask.sum() / mask.size, 6),
            "bbox": (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            if len(ys) else None, "components": len(comps)}
    assert mask_stats(mask) == want
    assert mask_stats(mask.astype(np.uint8) * 255) == want  # a 0/255 mask: the same figures
    if len(ys):  # any box holding every lesion pixel gives the same figures (infer passes the model's box)
        h, w = mask.shape
        y0 = data.draw(st.integers(0, int(ys.min())))
        x0 = data.draw(st.integers(0, int(xs.min())))
        y1 = data.draw(st.integers(int(ys.max()) + 1, h))
        x1 = data.draw(st.integers(int(xs.max()) + 1, w))
        assert mask_stats(mask, (y0, y1, x0, x1)) == want
        assert mask_stats(mask, (y0, y1, x0, x1), components=len(comps)) == want


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 14), st.integers(2, 14)), elements=st.floats(0, 1, width=32)),
       st.sampled_from([0.3, 0.5, 0.7]), st.sampled_from(["largest", "all"]), st.integers(0, 4), st.booleans())
def test_postprocess_is_threshold_then_components_then_holes_inside_any_box(prob, threshold, keep, min_area, holes):
    opts = PostProcess(threshold=threshold, keep=keep, min_area=min_area, fill_holes=holes)
    mask = prob >= threshold
    comps = ref_components(mask)
    if keep == "largest":
        best = max(comps, key=len) if comps else []
        kept = [best] if len(best) >= min_area else []
    else:
        kept = [c for c in comps if len(c) >= min_area]
    want = _paint(mask.shape, kept)
    if holes:
        want = ref_fill_holes(want) if want.any() else want
    assert np.array_equal(postprocess(prob, opts), want)
    ys, xs = np.nonzero(mask)
    if len(ys):  # the box around every pixel at or above the threshold changes nothing
        box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        assert np.array_equal(postprocess(prob, opts, box), want)


def test_labels_fast_path_is_taken_and_the_wide_path_handles_more_than_65535_components(monkeypatch):
    mask = _two_blobs()

    def no_fallback(*args, **kwargs):
        raise AssertionError("the 16-bit path should label fewer than 65536 components")

    with monkeypatch.context() as m:
        m.setattr(pp.cv2, "connectedComponentsWithStats", no_fallback)
        n, labels, areas = pp._labels(mask)
        assert n == 3 and sorted(areas.tolist()) == [30, 400, 4000 - 430] and labels.dtype == np.uint16
        n, _, areas = pp._labels(mask.astype(np.uint8) * 255)
        assert n == 3 and sorted(areas.tolist()) == [30, 400, 4000 - 430]
    dots = np.zeros((540, 540), bool)
    dots[::2, ::2] = True  # 72,900 isolated pixels: more labels than 16 bits hold
    n, labels, areas = pp._labels(dots)
    assert n == 72_901 and areas[0] == dots.size - 72_900 and (areas[1:] == 1).all()
    assert labels[0, 0] == 1 and labels[0, 2] == 2 and labels[2, 0] == 271  # raster order
    assert pp.count_components(dots) == 72_900
    kept = keep_components(dots, "all", 1)
    assert kept.sum() == 72_900


def test_masks_of_other_integer_types_zero_size_and_ties_by_hand():
    mask = np.zeros((6, 7), bool)
    mask[1:3, 1:3] = True
    mask[4:6, 5:7] = True  # two 2x2 components: a tie, the first in raster order wins
    for typed in (mask.astype(np.int32), mask.astype(np.uint8), mask.astype(np.float32)):  # 0/1 values
        assert pp.count_components(typed) == 2 and pp._labels(typed)[0] == 3
        assert mask_stats(typed) == {"lesion_area_px": 8, "lesion_fraction": round(8 / 42, 6), "bbox": (1, 1, 6, 5),
                                     "components": 2}
        assert keep_components(typed).sum() == 4 and keep_components(typed)[1, 1]  # default: largest, min_area 0
    tie = np.array([[False, False, True], [True, False, False]])
    assert np.array_equal(keep_components(tie, "largest"), [[False, False, True], [False, False, False]])
    empty = np.zeros((0, 5), bool)
    assert pp.count_components(empty) == 0
    assert mask_stats(empty) == {"lesion_area_px": 0, "lesion_fraction": 0.0, "bbox": None, "components": 0}
    assert mask_stats(mask, (0, 0, 0, 0)) == {"lesion_area_px": 0, "lesion_fraction": 0.0, "bbox": None,
                                              "components": 0}  # an empty box: nothing inside


def test_postprocess_blur_threshold_edge_and_box_by_hand():
    import cv2

    rng = np.random.default_rng(4)
    prob = rng.random((30, 40)).astype(np.float32)
    for sigma in (0.5, 2.0):  # any positive sigma blurs, with OpenCV's automatic kernel in both directions
        want = cv2.GaussianBlur(prob, (0, 0), sigmaX=sigma) >= 0.5
        got = postprocess(prob, PostProcess(blur=sigma, keep="all", fill_holes=False))
        assert np.array_equal(got, want), sigma
    at = np.full((4, 4), 0.5, np.float32)  # exactly at the threshold: lesion (>=)
    assert postprocess(at, PostProcess(threshold=0.5)).all()
    boxed = postprocess(prob, PostProcess(keep="all", fill_holes=False), (5, 20, 10, 30))
    assert boxed.dtype == bool and boxed.shape == prob.shape and not boxed[:5].any() and not boxed[:, :10].any()
    assert np.array_equal(boxed[5:20, 10:30], prob[5:20, 10:30] >= 0.5)
    assert PostProcess(blur=1.5).as_dict() == {"threshold": 0.5, "blur": 1.5, "keep": "largest", "min_area": 0,
                                               "fill_holes": True}
    with pytest.raises(SkinsegError, match="threshold 1.5: must be above 0"):
        PostProcess(threshold=1.5)
