"""DeepLabV3+ construction and augmentation invariants."""

from types import SimpleNamespace

import numpy as np
import pytest

from skinseg.shared.config import defaults
from skinseg.shared.errors import SkinsegError


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet50"])
def test_model_shapes_and_separable_is_cheaper(backbone):
    from skinseg.training.model import build_model

    std = build_model((64, 96), backbone, "standard", filters=64)
    sep = build_model((64, 96), backbone, "separable", filters=64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    y = sep.predict(x, verbose=0)
    assert y.shape == (2, 64, 96, 1) and y.min() >= 0 and y.max() <= 1
    head = lambda m: sum(w.size for layer in m.layers if layer.name.startswith(("aspp", "decoder"))  # noqa: E731
                         for w in layer.get_weights())
    assert head(sep) * 3 < head(std)


def test_bad_tile_and_offline_imagenet_are_clear_errors(monkeypatch):
    from keras.src.utils import file_utils

    from skinseg.training.model import build_model

    with pytest.raises(SkinsegError, match="multiples of 16"):
        build_model((60, 96))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(SkinsegError, match="weights = imagenet.*offline.*weights = none"):
        build_model((64, 64), weights="imagenet")


def _aug_section(**kw):
    return SimpleNamespace(**(defaults()["augmentor"] | kw))


def test_classifier_before_last_upsampling_is_the_same_function():
    """The head classifies at 1/4 resolution, then upsamples one channel (no 256-channel full-size tensor);
    the old order (upsample all channels, then classify) gives the same output, so old checkpoints
    rebuilt by export predict exactly as they did."""
    import keras

    from skinseg.training.model import build_model

    m = build_model((64, 96), "mobilenetv2", "separable", alpha=0.35, filters=32)
    clf, up_out = m.get_layer("classifier"), m.get_layer("decoder_up_out")
    assert up_out.input.shape[-1] == 1 and tuple(up_out.output.shape[1:]) == (64, 96, 1)
    rng = np.random.default_rng(0)
    clf.set_weights([rng.normal(0, 1, w.shape).astype(np.float32) for w in clf.get_weights()])
    f = keras.Input(tuple(clf.input.shape[1:]))
    new = keras.Model(f, up_out(clf(f)))  # the model's own layers, in the model's order
    old = keras.Model(f, clf(keras.layers.UpSampling2D((4, 4), interpolation="bilinear")(f)))
    x = rng.normal(0, 1, (2, *f.shape[1:])).astype(np.float32)
    a, b = new.predict(x, verbose=0), old.predict(x, verbose=0)
    assert a.shape == b.shape == (2, 64, 96, 1)
    assert float(np.abs(a - b).max()) < 1e-4
    assert float(a.std()) > 0.1  # a varied map, not one that agrees trivially


def test_augmentation_keeps_mask_binary_aligned_and_seeded():
    from skinseg.training.augment import Augmenter

    rng = np.random.default_rng(0)
    mask = np.zeros((96, 128), np.uint8)
    mask[20:70, 30:100] = 1
    mask[40:50, 10:30] = 1
    # geometry only: the image's green channel is the mask, so alignment can be checked pixel by pixel
    image = np.dstack([rng.integers(0, 255, (96, 128), dtype=np.uint8), mask * 255, np.zeros_like(mask)])
    aug = Augmenter(_aug_section(brightness=0, contrast=0, saturation=0, hue=0, probability=1.0, free_rotation=20,
                                 alpah=60), (96, 128), True, True, seed=7)
    changed = 0
    for i in range(20):
        img, m = aug(image, mask, epoch=0, index=i)
        assert img.shape == (96, 128, 3) and m.shape == (96, 128)
        assert set(np.unique(m)) <= {0, 1}
        agree = ((img[..., 1] > 127) == (m == 1)).mean()
        assert agree > 0.97, (i, agree)
        changed += not np.array_equal(m, mask)
        a2, m2 = aug(image, mask, epoch=0, index=i)
        np.testing.assert_array_equal(m, m2)
        np.testing.assert_array_equal(img, a2)
    assert changed >= 15
    other, _ = aug(image, mask, epoch=1, index=0)
    assert not np.array_equal(other, aug(image, mask, epoch=0, index=0)[0])


def test_colour_jitter_changes_image_only():
    from skinseg.training.augment import Augmenter

    image = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    aug = Augmenter(_aug_section(hflip=False, vflip=False, rotation=False, shrinks=[], shears=[], transformer=False,
                                 brightness=0.5), (64, 64), True, True, seed=1)
    outs = [aug(image, mask, 0, i) for i in range(10)]
    assert all(np.array_equal(m, mask) for _, m in outs)
    assert len({int(img.mean()) for img, _ in outs}) > 3


def test_pydataset_pipeline_gives_the_tf_data_batches(tmp_path):
    """JAX/PyTorch training reads the same seeded samples, epoch by epoch, as tf.data does."""
    from skinseg.shared.dataset import pair_images_masks
    from skinseg.shared.synthetic import write_dataset
    from skinseg.training.augment import Augmenter
    from skinseg.training.data import PairSet, batch_sequence, train_dataset

    write_dataset(tmp_path, 10, (48, 64), seed=3)
    pairs = pair_images_masks(sorted((tmp_path / "images").iterdir()), sorted((tmp_path / "masks").iterdir())).pairs
    assert len(pairs) == 10
    data = PairSet(pairs, 64, 3).cache()
    aug = Augmenter(_aug_section(probability=1.0), (48, 64), True, True, seed=5)
    steps, batch = 2, 3
    tf_batches = [(x.numpy(), y.numpy()) for x, y in train_dataset(data, aug, (48, 64), batch, steps, 0, 2, 5)]
    seq = batch_sequence(data, aug, batch, steps, 0, 5, workers=1)
    ours = []
    for _ in range(2):
        ours += [seq[j] for j in range(len(seq))]
        seq.on_epoch_end()
    assert len(tf_batches) == len(ours) == 4
    for (a, b), (c, d) in zip(tf_batches, ours, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert not np.array_equal(ours[0][0], ours[2][0])  # epochs differ
