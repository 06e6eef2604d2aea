"""The shipped model segments real dermoscopy images through the engine infer uses.

A guard against shipping a broken or mis-described model (wrong scale, channel order, threshold), not
a benchmark: the full-resolution fixtures were also in the training or validation data, downscaled.
"""

import numpy as np
import pytest

from skinseg.inference.segmenter import Segmenter
from skinseg.shared.dataset import split_pairs
from skinseg.shared.images import binarize, read_mask
from skinseg.shared.metrics import scores
from tests.realdata import FULLRES, ISIC256, SHARED_DATA

MIN_MEAN_JACCARD = 0.85  # the shipped models score about 0.90 at full resolution; a mis-described one far less
MIN_TEST_JACCARD = 0.70  # held-out 256x192 test fixtures: the shipped model's test mean is 0.81


def mean_jaccard(seg: Segmenter, pairs) -> list[float]:
    jaccards = []
    for image, mask in pairs:
        truth = binarize(read_mask(mask))
        pred = seg.predict(image)
        assert pred.mask.shape == truth.shape
        jaccards.append(scores(pred.mask, truth, with_hd95=False)["jaccard"])
    return jaccards


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_model_finds_lesions_at_full_resolution(precision):
    pairs = split_pairs(FULLRES / "images", FULLRES / "masks").pairs
    assert len(pairs) == 4
    jaccards = mean_jaccard(Segmenter(precision, "cpu"), pairs)
    print(precision, np.round(jaccards, 3))
    assert np.mean(jaccards) >= MIN_MEAN_JACCARD


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_model_on_held_out_test_fixtures(precision):
    pairs = split_pairs(ISIC256 / "test" / "images", ISIC256 / "test" / "masks").pairs
    assert len(pairs) == 16
    jaccards = mean_jaccard(Segmenter(precision, "cpu"), pairs)
    print(precision, np.round(jaccards, 3))
    assert np.mean(jaccards) >= MIN_TEST_JACCARD


@pytest.mark.extended
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_model_on_all_22_fullres_images(precision):
    root = SHARED_DATA / "isic-fullres"
    pairs = split_pairs(root / "images", root / "masks").pairs
    assert len(pairs) >= 20, f"extended check needs the full data at {root} (SKINSEG_DATA)"
    jaccards = mean_jaccard(Segmenter(precision, "cpu"), pairs)
    assert np.mean(jaccards) >= MIN_MEAN_JACCARD and np.median(jaccards) >= MIN_MEAN_JACCARD
