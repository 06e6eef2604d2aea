"""Augmentation on the accelerator (Keras ops), EMA, warm-up and the final fit on train + valid."""

import json

import numpy as np
import pytest

from skinseg.shared.config import defaults
from tests.train.conftest import tiny_project


def _layer(**kw):
    from skinseg.training.device_augment import DeviceAugment

    return DeviceAugment(defaults()["augmentor"] | kw, seed=7)


def _pair(n=8):
    rng = np.random.default_rng(0)
    mask = np.zeros((n, 96, 128, 1), np.float32)
    mask[:, 20:70, 30:100] = 1
    mask[:, 40:50, 10:30] = 1
    # geometry only: the green channel is the mask, so alignment is checked pixel by pixel
    img = np.concatenate([rng.integers(0, 255, (n, 96, 128, 1)).astype(np.float32), mask * 255, np.zeros_like(mask)],
                         axis=-1)
    return img, mask


def test_geometry_moves_image_and_mask_together_and_masks_stay_binary():
    layer = _layer(free_rotation=20, alpah=60, probability=1.0, brightness=0, contrast=0, saturation=0, hue=0)
    img, mask = _pair()
    a, m = (np.asarray(t) for t in layer(img, mask))
    assert a.shape == img.shape and m.shape == mask.shape
    assert set(np.unique(m)) <= {0.0, 1.0}
    for i in range(len(img)):
        assert ((a[i, ..., 1] > 127) == (m[i, ..., 0] > 0.5)).mean() > 0.99
    assert sum(not np.array_equal(m[i], mask[i]) for i in range(len(img))) >= 6


def test_parameters_stay_within_the_config_ranges():
    layer = _layer(free_rotation=15, shrinks=[0.8], zooms=[1.2], shears=[0.2], brightness=0.2, contrast=0.3,
                   saturation=0.1, hue=0.03, probability=0.5, angles=[0, 90, 180, 270])
    p = {k: np.asarray(v) for k, v in layer.sample(512).items()}
    assert set(np.unique(p["hflip"])) <= {0, 1} and set(np.unique(p["rot90"])) <= {0, 1, 2, 3}
    assert np.abs(p["free_angle"]).max() <= 15 and p["scale"].min() >= 0.8 and p["scale"].max() <= 1.2
    assert np.abs(p["shear_x"]).max() <= 0.2 and np.abs(p["hue"]).max() <= 0.03
    assert p["brightness"].min() >= 0.8 and p["brightness"].max() <= 1.2 and p["contrast"].min() >= 0.7
    assert 0.3 < (p["scale"] != 1).mean() < 0.7  # applied with probability 0.5
    assert p["free_angle"].std() > 3  # really random, not stuck at a bound


def test_seeded_runs_repeat_and_colour_touches_the_image_only():
    img, mask = _pair(4)
    a1, m1 = (np.asarray(t) for t in _layer(brightness=0.5, probability=1.0)(img, mask))
    a2, m2 = (np.asarray(t) for t in _layer(brightness=0.5, probability=1.0)(img, mask))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(m1, m2)
    still = _layer(hflip=False, vflip=False, rotation=False, shrinks=[], shears=[], transformer=False, brightness=0.5)
    a, m = (np.asarray(t) for t in still(img, mask))
    np.testing.assert_array_equal(m, mask)
    assert not np.allclose(a, img)


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    """The tiny model trained with augmentation on the device, EMA and a warmed-up cosine schedule."""
    from skinseg.training.trainer import train

    root = tmp_path_factory.mktemp("device")
    cfg = tiny_project(root)
    text = cfg.read_text().replace("patience = 0", "patience = 0\ndevice_augmentation = True\nema = 0.9\n"
                                                   'schedule = "cosine"\nwarmup_epochs = 1')
    cfg.write_text(text)
    return train(cfg, quiet=True)


def test_tiny_model_learns_with_device_augmentation_and_ema(device_run):
    import csv

    with open(device_run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert max(float(r["val_dice"]) for r in rows) >= 0.8, rows
    assert float(rows[0]["lr"]) > float(rows[-1]["lr"])  # cosine decays
    # one epoch of warm-up (15 steps from lr/100) ends exactly at the peak 0.003; a cosine without warm-up
    # would already be down to 0.0028 there
    assert float(rows[0]["lr"]) == pytest.approx(0.003, rel=1e-3), rows[0]["lr"]
    lrs = [float(r["lr"]) for r in rows]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)), lrs
    assert (device_run / "best.keras").is_file()
    import keras

    import skinseg.training.losses  # noqa: F401 - the custom objects the file names
    import skinseg.training.model  # noqa: F401

    model = keras.saving.load_model(device_run / "last.keras", safe_mode=True)
    opt = model.optimizer
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.9)  # the config's EMA reaches the optimizer
    # and the checkpoint holds the moving average of the weights, not the last step's raw weights
    averages = opt._model_variables_moving_average
    assert len(averages) == len(model.trainable_variables)
    for avg, w in zip(averages, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(avg), keras.ops.convert_to_numpy(w))


def test_final_fit_trains_on_train_and_valid_with_a_fixed_schedule(tmp_path):
    from skinseg.shared.errors import SkinsegError
    from skinseg.training.trainer import train

    cfg = tiny_project(tmp_path, epochs=2)
    text = cfg.read_text()
    cfg.write_text(text.replace("patience = 0", "patience = 0\ntrain_on_valid = True"))
    with pytest.raises(SkinsegError, match="train_on_valid = True needs schedule = cosine"):
        train(cfg, quiet=True)
    cfg.write_text(text.replace("patience = 0", 'patience = 0\ntrain_on_valid = True\nschedule = "cosine"'))
    run = train(cfg, quiet=True)
    assert json.loads((run / "data.json").read_text())["train"]["pairs"] == 240 + 48
    state = json.loads((run / "state.json").read_text())
    assert state["best_epoch"] == 2 and state["finished"]


def test_a_device_augmented_run_resumes_with_its_optimizer(device_run, tmp_path):
    """last.keras carries the optimizer that trained (Adam's steps and moments, the schedule's position,
    the EMA): a resumed run goes on from them."""
    import shutil

    import keras

    import skinseg.training.losses  # noqa: F401
    import skinseg.training.model  # noqa: F401
    from skinseg.training.trainer import train

    run = tmp_path / "run"
    shutil.copytree(device_run, run)

    def steps() -> int:
        opt = keras.saving.load_model(run / "last.keras", safe_mode=True).optimizer
        return int(keras.ops.convert_to_numpy(opt.iterations))

    assert steps() == 6 * 15
    train(None, resume=run, epochs=7, quiet=True)
    assert steps() == 7 * 15
