"""Training: a real learning test, the run folder, resume and interruption."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train.conftest import tiny_project


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tiny_model_learns_synthetic_lesions(trained_run):
    rows = _history(trained_run)
    assert len(rows) == 6
    best = max(float(r["val_dice"]) for r in rows)
    assert best >= 0.85, rows
    state = json.loads((trained_run / "state.json").read_text())
    assert state["finished"] and state["best"] == pytest.approx(max(float(r["val_jaccard"]) for r in rows), abs=1e-4)


def test_run_folder_contents(trained_run):
    for name in ("config.ini", "data.json", "best.keras", "last.keras", "state.json", "history.csv", "curves.png",
                 "versions.json", "tensorboard"):
        assert (trained_run / name).exists(), name
    versions = json.loads((trained_run / "versions.json").read_text())
    assert versions["keras"].startswith("3") and versions["devices"]["precision"] == "float32"
    assert json.loads((trained_run / "data.json").read_text())["train"]["pairs"] == 240
    assert not list(trained_run.glob(".*tmp*"))


def test_resume_continues_to_more_epochs(trained_run, tmp_path):
    import shutil

    import keras
    import numpy as np

    import skinseg.training.losses  # noqa: F401 - registers the custom objects last.keras names
    import skinseg.training.model  # noqa: F401
    from skinseg.training.trainer import train

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)

    def optimizer_state():
        opt = keras.saving.load_model(run / "last.keras", safe_mode=True).optimizer
        return int(keras.ops.convert_to_numpy(opt.iterations)), [keras.ops.convert_to_numpy(v) for v in opt.variables]

    steps_before, moments_before = optimizer_state()
    train(None, resume=run, epochs=7, quiet=True)
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 8))
    assert json.loads((run / "state.json").read_text())["epoch"] == 7
    # the optimizer goes on where it stopped: Adam's step count continues by one epoch's steps (240 pairs,
    # batch 16), not from zero, and its moments moved on from the saved ones rather than restarting
    steps_after, moments_after = optimizer_state()
    assert steps_before == 6 * 15 and steps_after == 7 * 15, (steps_before, steps_after)
    moved = [not np.array_equal(a, b) for a, b in zip(moments_before, moments_after, strict=True) if a.size > 1]
    assert moved and all(moved)


def _steps_and_weights(run):
    import keras

    import skinseg.training.losses  # noqa: F401 - registers the custom objects last.keras names
    import skinseg.training.model  # noqa: F401

    model = keras.saving.load_model(run / "last.keras", safe_mode=True)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations)), model.get_weights()


def test_an_interrupted_run_resumed_trains_as_the_uninterrupted_one(trained_run, tmp_path, monkeypatch):
    """Ctrl-C in the middle of epoch 3 of the tiny 6-epoch run, then --resume: the cut epoch is redone
    from the end of epoch 2, so the optimizer's steps, the weights and the history are those of the
    uninterrupted run with the same seed and data (trained_run). Saving mid-epoch weights made the resumed
    run train the cut epoch's first steps twice."""
    import keras
    import numpy as np

    from skinseg.training.trainer import Trainer, train

    real = Trainer.callbacks

    class CtrlC(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 2 * 15 + 7:  # 15 steps an epoch: the 7th step of epoch 3
                raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "callbacks", lambda self: [*real(self), CtrlC()])
    with pytest.raises(SystemExit) as stop:
        train(tiny_project(tmp_path), quiet=True)
    assert stop.value.code == 130
    monkeypatch.setattr(Trainer, "callbacks", real)
    run = tmp_path / "runs" / "tiny"
    state = json.loads((run / "state.json").read_text())
    assert state["interrupted"] and state["epoch"] == 2 and len(_history(run)) == 2
    assert _steps_and_weights(run)[0] == 2 * 15  # the end of epoch 2, not 37 steps in
    assert not list(run.glob(".*.tmp.keras"))
    train(None, resume=run, quiet=True)
    steps, weights = _steps_and_weights(run)
    ref_steps, ref_weights = _steps_and_weights(trained_run)
    assert steps == ref_steps == 6 * 15
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, ref_weights, strict=True))
    assert worst < 1e-3, worst
    ours, ref = _history(run), _history(trained_run)
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in ref]
    assert abs(float(ours[-1]["val_loss"]) - float(ref[-1]["val_loss"])) < 1e-3


def test_sigterm_saves_last_model_and_history(tmp_path):
    cfg = tiny_project(tmp_path, epochs=50)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "train", str(cfg), "-q"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "runs" / "tiny"
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "history.csv").exists():
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(1)
    assert (run / "history.csv").exists(), "no epoch finished in time"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "--resume" in out
    state = json.loads((run / "state.json").read_text())
    assert state["interrupted"] and 1 <= state["epoch"] < 50
    assert (run / "last.keras").is_file() and len(_history(run)) == state["epoch"]


def test_preflight_refuses_too_little_data(tmp_path):
    from skinseg.shared.errors import SkinsegError
    from skinseg.shared.synthetic import write_dataset
    from skinseg.training.trainer import train

    write_dataset(tmp_path / "data" / "train", 2, (64, 64), seed=1)
    write_dataset(tmp_path / "data" / "valid", 2, (64, 64), seed=2)
    cfg = tmp_path / "c.ini"
    cfg.write_text("[train]\nimage_datapath = data/train/images\nmask_datapath = data/train/masks\n"
                   "[eval]\nimage_datapath = data/valid/images\nmask_datapath = data/valid/masks\n")
    with pytest.raises(SkinsegError, match="too little valid data.*min_pairs"):
        train(cfg, quiet=True)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path):
    from skinseg.shared.errors import SkinsegError
    from skinseg.training.trainer import train

    cfg = tiny_project(tmp_path, epochs=1)
    cfg.write_text(cfg.read_text().replace("[model]", '[model]\nweights = "missing.keras"'))
    with pytest.raises(SkinsegError, match="weights = .*missing.keras: file not found"):
        train(cfg, quiet=True)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_small_images_and_shared_ids_are_warned_about(tmp_path, monkeypatch):
    """The seed's 512 px tiles on 256x192 images: the seed resized, skinseg pads, and says so."""
    import shutil

    import numpy as np

    from skinseg import ui
    from skinseg.shared.config import load_config
    from skinseg.training.trainer import preflight, warn_small_images

    warnings = []
    monkeypatch.setattr(ui, "warn", warnings.append)
    cfg_path = tiny_project(tmp_path)
    img = next((tmp_path / "data" / "train" / "images").iterdir())
    shutil.copy(img, tmp_path / "data" / "valid" / "images" / img.name)
    mask = tmp_path / "data" / "train" / "masks" / f"{img.stem}_segmentation.png"
    shutil.copy(mask, tmp_path / "data" / "valid" / "masks" / mask.name)
    cfg = load_config(cfg_path)
    preflight(cfg, quiet=True)
    assert any("in both train and valid" in w for w in warnings)
    cfg.model.image_height = cfg.model.image_width = 512
    warn_small_images(cfg, [], [np.zeros((192, 256, 3), np.uint8)])
    assert any("smaller than the 512x512 tile" in w and "working_scale = 512" in w for w in warnings)


def test_the_time_estimate_warns_a_long_cpu_run_with_the_faster_settings():
    from skinseg.training.trainer import estimate_line

    line, warning = estimate_line(0.5, 100, 40, on_gpu=False)  # 50 s an epoch, 40 epochs: 33 min
    assert line == "about 50 s per epoch, 33 min for the 40 epochs left" and warning is None
    line, warning = estimate_line(1.2, 500, 100, on_gpu=False)  # 10 min an epoch: 16.7 h
    assert line == "about 10 min per epoch, 16.7 h for the 100 epochs left"
    assert "16.7 h" in warning and "working_scale" in warning and "epochs" in warning
    assert estimate_line(1.2, 500, 100, on_gpu=True)[1] is None


def test_a_short_run_decodes_only_the_images_it_draws(tmp_path):
    from skinseg.shared.dataset import split_pairs
    from skinseg.shared.synthetic import write_dataset
    from skinseg.training.data import PairSet

    write_dataset(tmp_path / "d", 12, (64, 96), seed=3)
    pairs = split_pairs(tmp_path / "d" / "images", tmp_path / "d" / "masks").pairs
    lazy = PairSet(pairs, 64, None, lazy=True)
    first = lazy.get(3)
    assert lazy.images is None and list(lazy._memo) == [3] and lazy.get(3) is first
    eager = PairSet(pairs, 64, None).cache()
    assert (eager.get(3)[1] == first[1]).all()


def test_keras_backend_jax_without_jax_is_one_clear_line(monkeypatch):
    import importlib.util

    from skinseg.shared.errors import SkinsegError
    from skinseg.training import tf_env

    real = importlib.util.find_spec
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(SkinsegError, match="KERAS_BACKEND=jax but jax is not installed"):
        tf_env._setup_other("auto", 0)
