import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinseg.inference.tiling import gaussian_weight, sliding_window, tile_grid, tile_starts


def test_tile_starts_cover_and_align_to_edge():
    starts = tile_starts(1000, 256, 0.5)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 128 for a, b in zip(starts, starts[1:], strict=False))


def test_tile_starts_small_and_exact():
    assert tile_starts(100, 256, 0.5) == [0]
    assert tile_starts(256, 256, 0.5) == [0]
    assert tile_starts(512, 256, 0.0) == [0, 256]


def test_overlap_must_be_below_one():
    with pytest.raises(ValueError):
        tile_starts(100, 10, 1.0)


def test_gaussian_weight_peaks_in_centre_and_stays_positive():
    w = gaussian_weight(64, 48)
    assert w.shape == (64, 48)
    assert w.min() > 0
    assert w[32, 24] == pytest.approx(w.max(), rel=1e-2)
    assert w[0, 0] < 1e-4 * w.max() < w[0, 24] * 1e4


def _mean_channel(batch):
    return batch.astype(np.float32).mean(axis=3) / 255.0


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (257, 255), (512, 512), (1000, 333)])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_pointwise_prediction_is_reproduced_exactly(shape, batch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    out = sliding_window(img, _mean_channel, (64, 96), overlap=0.5, batch_size=batch)
    assert out.shape == shape
    np.testing.assert_allclose(out, img.mean(axis=2) / 255.0, atol=1e-5)


def test_predict_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="expected"):
        sliding_window(np.zeros((10, 10, 3), np.uint8), lambda b: b[:, :5, :5, 0], (10, 10))


def test_every_tile_is_visited_once():
    calls = []

    def predict(b):
        calls.append(len(b))
        return np.zeros(b.shape[:3], np.float32)

    sliding_window(np.zeros((300, 500, 3), np.uint8), predict, (128, 128), overlap=0.25, batch_size=5)
    assert sum(calls) == len(tile_grid(300, 500, 128, 128, 0.25))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), th=st.integers(8, 128), tw=st.integers(8, 128),
       overlap=st.floats(0, 0.9))
def test_property_full_coverage_and_exact_pointwise(h, w, th, tw, overlap):
    img = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cover = np.zeros((max(h, th), max(w, tw)), int)
    for y, x in tile_grid(max(h, th), max(w, tw), th, tw, overlap):
        assert y + th <= cover.shape[0] and x + tw <= cover.shape[1]
        cover[y : y + th, x : x + tw] += 1
    assert cover.min() >= 1
    out = sliding_window(img, _mean_channel, (th, tw), overlap, batch_size=4)
    assert out.shape == (h, w)
    np.testing.assert_allclose(out, img.mean(axis=2) / 255.0, atol=1e-5)
