import numpy as np
import pytest

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
