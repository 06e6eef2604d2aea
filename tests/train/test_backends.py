"""Keras 3's other backends: the tiny model trained on JAX or PyTorch learns, and its .keras file exports
to ONNX (through TensorFlow, or on PyTorch through Keras' own torch.onnx export, for a GPU box without
TensorFlow). scripts/test.sh installs the [jax] extra and PyTorch's CPU build into the training venv."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

from skinseg.inference.segmenter import Segmenter
from tests.train.conftest import tiny_project


def _train(tmp_path, backend: str) -> tuple[list[float], object]:
    cfg = tiny_project(tmp_path, epochs=2)
    res = subprocess.run([sys.executable, "-m", "skinseg", "train", str(cfg), "-q"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "KERAS_BACKEND": backend})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "versions.json").read_text())["backend"] == backend
    with open(run / "history.csv", newline="") as fh:
        dice = [float(r["val_dice"]) for r in csv.DictReader(fh)]
    return dice, run


def test_a_model_trained_on_jax_learns_and_exports_through_tensorflow(tmp_path):
    assert importlib.util.find_spec("jax"), "JAX is needed: bash scripts/test.sh installs the [jax] extra"
    dice, run = _train(tmp_path, "jax")
    assert len(dice) == 2 and dice[1] > dice[0] and dice[1] >= 0.7, dice  # it learns, on JAX
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    res = subprocess.run([sys.executable, "-m", "skinseg", "export", str(run), "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]  # parity with Keras held, as for any run
    image = sorted((tmp_path / "data" / "valid" / "images").glob("*"))[0]
    assert Segmenter(run / "model.onnx", "cpu").predict(image).mask.any()


def test_a_model_trained_on_pytorch_learns_and_exports_on_pytorch_as_through_tensorflow(tmp_path):
    assert importlib.util.find_spec("torch"), "PyTorch is needed: bash scripts/test.sh installs its CPU build"
    dice, run = _train(tmp_path, "torch")
    assert len(dice) == 2 and dice[1] > dice[0] and dice[1] >= 0.7, dice  # it learns, on PyTorch
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    for backend, out in (("torch", run / "torch.onnx"), ("tensorflow", run / "tf.onnx")):
        res = subprocess.run([sys.executable, "-m", "skinseg", "export", str(run), "-o", str(out), "-q"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=900, env={**env, "KERAS_BACKEND": backend})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    torch_file, tf_file = (ort.InferenceSession(str(p)) for p in (run / "torch.onnx", run / "tf.onnx"))
    ends = [(a.name, a.shape) for a in (*torch_file.get_inputs(), *torch_file.get_outputs())]
    assert ends == [("image", ["N", 64, 64, 3]), ("probability", ["N", 64, 64, 1])]  # the contract's names
    tiles = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    a, b = (s.run(None, {"image": tiles})[0] for s in (torch_file, tf_file))
    assert a.shape == b.shape == (3, 64, 64, 1) and np.abs(a - b).max() < 1e-3  # the same model, two converters
    image = sorted((tmp_path / "data" / "valid" / "images").glob("*"))[0]
    assert Segmenter(run / "torch.onnx", "cpu").predict(image).mask.any()
