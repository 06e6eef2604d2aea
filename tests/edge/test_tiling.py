import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skinseg.inference.tiling import gaussian_weight, pad_to_tile, sliding_window, tile_grid, tile_starts


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


def _ref_weight_1d(n: int, s: float) -> np.ndarray:
    """The blending weight along one axis, written from its definition: a Gaussian with sigma n*s centred
    on the tile, floored at 1e-6, peak 1; flat when s is 0."""
    if s == 0:
        return np.ones(n)
    g = np.array([max(math.exp(-0.5 * ((i - (n - 1) / 2) / (n * s)) ** 2), 1e-6) for i in range(n)])
    return g / g.max()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), th=st.integers(2, 16), tw=st.integers(2, 16),
       overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]), sigma=st.sampled_from([0.0, 0.125, 0.3]),
       batch=st.integers(1, 5))
def test_blending_equals_a_brute_force_weighted_average(h, w, th, tw, overlap, sigma, batch):
    """Each tile predicts one value (its mean, so tiles differ): every output pixel must be the weighted
    average of the values of the tiles covering it, weights from the definition, edge padding for
    images smaller than a tile; tiles reach `predict` in batches of at most `batch`, as uint8."""
    img = np.random.default_rng(h * 97 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    seen = []

    def per_tile(tiles):
        seen.append((len(tiles), tiles.dtype))
        return np.broadcast_to(tiles.mean(axis=(1, 2, 3))[:, None, None] / 255.0, tiles.shape[:3])

    out = sliding_window(img, per_tile, (th, tw), overlap=overlap, batch_size=batch, sigma_scale=sigma)
    assert out.dtype == np.float32 and out.shape == (h, w)
    assert all(n <= batch and dtype == np.uint8 for n, dtype in seen)
    padded = np.pad(img, [(0, max(0, th - h)), (0, max(0, tw - w)), (0, 0)], mode="edge")
    ph, pw = padded.shape[:2]
    weight = np.outer(_ref_weight_1d(th, sigma), _ref_weight_1d(tw, sigma))
    num, den = np.zeros((ph, pw)), np.zeros((ph, pw))
    for y in tile_starts(ph, th, overlap):
        for x in tile_starts(pw, tw, overlap):
            value = padded[y:y + th, x:x + tw].astype(np.float64).mean() / 255.0
            num[y:y + th, x:x + tw] += weight * value
            den[y:y + th, x:x + tw] += weight
    np.testing.assert_allclose(out, (num / den)[:h, :w], atol=2e-5)


def test_defaults_and_edges_of_the_tile_arithmetic():
    img = np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    sizes = []

    def predict(tiles):
        sizes.append(len(tiles))
        return np.broadcast_to(tiles.mean(axis=(1, 2, 3))[:, None, None] / 255.0, tiles.shape[:3])

    default = sliding_window(img, predict, (32, 48))
    assert max(sizes) == 4  # the default batch
    explicit = sliding_window(img, predict, (32, 48), overlap=0.5, batch_size=4, sigma_scale=0.125)
    np.testing.assert_array_equal(default, explicit)
    ref = np.outer(_ref_weight_1d(5, 0.125), _ref_weight_1d(4, 0.125))
    np.testing.assert_allclose(gaussian_weight(5, 4, 0.125), ref, rtol=1e-6)
    np.testing.assert_array_equal(gaussian_weight(5, 3, 0.0), np.ones((5, 3), np.float32))  # odd: no 0/0 at the centre
    assert tile_starts(10, 2, 0.9) == list(range(9))  # a step rounds down to 0: it is 1, never 2
    assert tile_starts(7, 7, 0.5) == [0] and tile_starts(5, 7, 0.5) == [0]
    with pytest.raises(ValueError, match="overlap must be in \\[0, 1\\), got 1.0"):
        tile_starts(10, 4, 1.0)
    small = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(pad_to_tile(small, 3, 4), [[0, 1, 2, 2], [3, 4, 5, 5], [3, 4, 5, 5]])
    assert pad_to_tile(small, 2, 3) is small


def test_on_batch_hears_how_many_tiles_each_batch_held():
    heard = []
    img = np.zeros((100, 150, 3), np.uint8)
    sliding_window(img, lambda t: np.zeros(t.shape[:3], np.float32), (32, 32), batch_size=3, on_batch=heard.append)
    total = len(tile_grid(100, 150, 32, 32, 0.5))
    assert sum(heard) == total and heard[:-1] == [3] * (len(heard) - 1) and 1 <= heard[-1] <= 3
