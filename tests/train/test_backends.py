"""Keras 3's other backends: the tiny model trained on JAX learns, and its .keras file exports to ONNX
through TensorFlow like any run (scripts/test.sh installs the [jax] extra into the training venv).
PyTorch is not tested here: its CPU wheel is 550 MB, too much for CI's time."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

from skinseg.inference.segmenter import Segmenter
from tests.train.conftest import tiny_project


def test_a_model_trained_on_jax_learns_and_exports_through_tensorflow(tmp_path):
    assert importlib.util.find_spec("jax"), "JAX is needed: bash scripts/test.sh installs the [jax] extra"
    cfg = tiny_project(tmp_path, epochs=2)
    res = subprocess.run([sys.executable, "-m", "skinseg", "train", str(cfg), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "versions.json").read_text())["backend"] == "jax"
    with open(run / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dice = [float(r["val_dice"]) for r in rows]
    assert len(rows) == 2 and dice[1] > dice[0] and dice[1] >= 0.7, dice  # it learns, on JAX
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    res = subprocess.run([sys.executable, "-m", "skinseg", "export", str(run), "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]  # parity with Keras held, as for any run
    image = sorted((tmp_path / "data" / "valid" / "images").glob("*"))[0]
    assert Segmenter(run / "model.onnx", "cpu").predict(image).mask.any()
