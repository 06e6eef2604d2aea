"""`skinseg quantize` on the inference side: targets, gating, plain models, runtimes that load it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import onnx
import pytest

from skinseg.cli import app
from skinseg.inference.int8 import tensorrt_problems
from skinseg.inference.model_files import FP32
from skinseg.inference.segmenter import Segmenter
from skinseg.shared.images import load_image
from tests.cli_helpers import TEST256, invoke, runner
from tests.onnx_factory import make_model
from tests.realdata import ISIC256, TEST_IMAGES

CALIB = ISIC256 / "train" / "images"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = tmp_path_factory.mktemp("q")
    for target in ("cpu", "tensorrt"):
        res = runner.invoke(app, ["quantize", str(FP32), "--calibration", str(CALIB), "--images",
                                  str(ISIC256 / "valid"), "--target", target, "-o", str(out / f"{target}.onnx"),
                                  "--tiles", "16"])
        assert res.exit_code == 0, res.output
    return out


def test_targets_are_recorded_and_tensorrt_qdq_is_legal(quantized):
    cpu, trt = onnx.load(str(quantized / "cpu.onnx")), onnx.load(str(quantized / "tensorrt.onnx"))
    meta = {p.key: p.value for p in cpu.metadata_props}
    assert json.loads(meta["skinseg.quantization"])["target"] == "cpu" and meta["skinseg.precision"] == "int8"
    assert meta["skinseg.scale"] == "256"  # the FP32 model's description travels with it
    assert tensorrt_problems(trt) == []
    assert tensorrt_problems(cpu)  # uint8 activations: fine for the CPU, not for TensorRT
    # the input normalisation and the first convolution stay FP32: from the input to the first Conv,
    # no Quantize/DequantizeLinear (OpenCV DNN 4.x could not load uint8 DQ on the normalisation constants)
    consumers: dict[str, list] = {}
    for n in cpu.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    seen, frontier, conv_reached = [], [cpu.graph.input[0].name], False
    while frontier and not conv_reached:
        nodes = [n for t in frontier for n in consumers.get(t, [])]
        seen += nodes
        conv_reached = any(n.op_type == "Conv" for n in nodes)
        frontier = [o for n in nodes if n.op_type != "Conv" for o in n.output]
    assert conv_reached and not [n.op_type for n in seen if "Quantize" in n.op_type]


def test_cpu_target_loads_and_agrees_in_opencv_dnn(quantized):

    from skinseg.shared.scale import to_working

    img = load_image(TEST_IMAGES[0])
    tile = to_working(img.rgb, (img.height, img.width), 256)[None]
    net = cv2.dnn.readNetFromONNX(str(quantized / "cpu.onnx"))
    net.setInput(tile)
    ocv = net.forward().reshape(tile.shape[1:3])
    seg = Segmenter(quantized / "cpu.onnx", "cpu")
    ort = seg.adapter(tile)[0]
    assert np.mean((ocv >= 0.5) == (ort >= 0.5)) > 0.99


def test_gate_refuses_and_force_keeps(tmp_path):
    args = ["quantize", str(FP32), "--calibration", str(CALIB), "--tiles", "8", "-o", str(tmp_path / "q.onnx")]
    res = runner.invoke(app, [*args, "--max-drop", "-100"], terminal_width=250)
    assert res.exit_code == 2 and "not written" in res.output and not (tmp_path / "q.onnx").exists()
    assert runner.invoke(app, [*args, "--max-drop", "-100", "--force"]).exit_code == 0
    assert (tmp_path / "q.onnx").is_file() and not list(tmp_path.glob(".*"))


def _plain_model(path, middle: bool = True):
    """A float NCHW model with no metadata and unnamed nodes, as models from elsewhere come: convolutions
    (the middle one optional), ReLU, sigmoid."""
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32), "w")
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (1, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [h.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["r"])]
    if middle:
        nodes += [h.make_node("Conv", ["r", "w1"], ["c1"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"])]
    nodes += [h.make_node("Conv", ["r1" if middle else "r", "w2"], ["c2"]), h.make_node("Sigmoid", ["c2"], ["mask"])]
    g = h.make_graph(nodes, "plain", [h.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                     [h.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                     [w, w1, w2] if middle else [w, w2])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_plain_model_from_elsewhere_with_tile_and_scale(tmp_path):
    """Quantized with infer's --tile/--scale: its middle convolution in INT8 (unnamed nodes once matched the
    exclusions of the first and last and left the whole file FP32), computing what the float model does."""
    _plain_model(tmp_path / "plain.onnx")
    res = runner.invoke(app, ["quantize", str(tmp_path / "plain.onnx"), "--calibration", str(CALIB), "--tile", "64",
                              "--scale", "128", "--tiles", "8", "--force"], terminal_width=250)
    assert res.exit_code == 0, res.output
    image = sorted(CALIB.glob("*.jpg"))[0]
    int8, fp32 = (Segmenter(tmp_path / name, "cpu", tile=(64, 64), scale=128).predict(image).probability
                  for name in ("plain-int8.onnx", "plain.onnx"))
    nodes = {n.op_type for n in onnx.load(str(tmp_path / "plain-int8.onnx")).graph.node}
    assert "QuantizeLinear" in nodes and int8.shape == fp32.shape == (192, 256)
    assert np.abs(int8 - fp32).max() < 0.02  # INT8 computes what the float model computes, at the same place


def test_a_model_with_nothing_to_quantize_is_refused_not_copied_as_int8(tmp_path):
    _plain_model(tmp_path / "plain.onnx", middle=False)  # first and last convolution only: both stay FP32
    res = runner.invoke(app, ["quantize", str(tmp_path / "plain.onnx"), "--calibration", str(CALIB), "--tile", "64",
                              "--scale", "128", "--tiles", "8", "--force"], terminal_width=250)
    assert res.exit_code == 2 and "nothing in this model can be quantized" in res.output, res.output
    assert not (tmp_path / "plain-int8.onnx").exists()


def test_quantize_errors_are_one_line(tmp_path):
    model = make_model(tmp_path / "m.onnx", tile=(64, 64))
    res = runner.invoke(app, ["quantize", str(model), "--calibration", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no such folder" in res.output
    res = runner.invoke(app, ["quantize", str(model), "--calibration", str(CALIB), "--target", "tpu"])
    assert res.exit_code == 2 and "--target" in res.output


def test_quantize_refuses_zero_tiles_an_int8_model_and_nan_limits(tmp_path):
    from skinseg.inference.model_files import FP32, INT8

    calib = TEST256 / "images"
    for args, words in ((["--tiles", "0"], "--tiles 0"), (["--max-drop", "nan"], "--max-drop nan"),
                        (["--max-disagreement", "inf"], "--max-disagreement inf")):
        res = invoke("quantize", str(FP32), "--calibration", str(calib), "-o", str(tmp_path / "q.onnx"), *args)
        assert res.exit_code == 2 and words in res.output, res.output
    res = invoke("quantize", str(INT8), "--calibration", str(calib), "-o", str(tmp_path / "q.onnx"))
    assert res.exit_code == 2 and "already INT8" in res.output
    assert not list(tmp_path.iterdir())


def test_an_unreadable_calibration_image_is_left_out_of_the_gate_too(tmp_path):
    from skinseg.inference.model_files import FP32

    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted((TEST256 / "images").glob("*.jpg"))[:4]:
        shutil.copy(p, calib)
    (calib / "empty.jpg").write_bytes(b"")
    res = invoke("quantize", str(FP32), "--calibration", str(calib), "--tiles", "4", "-o", str(tmp_path / "q.onnx"),
              "--force")
    assert res.exit_code == 0, res.output
    assert "empty.jpg" in res.output and (tmp_path / "q.onnx").is_file()


def test_sigterm_during_quantize_leaves_no_temporary_files(tmp_path):
    """The signal lands inside the work, never after it: the test waits until quantize's own temporary
    folder holds the pre-processed model (calibration on 64 tiles follows, seconds long), then signals."""
    from skinseg.inference.model_files import FP32

    out, scratch = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "quantize", str(FP32), "--calibration",
                             str(TEST256 / "images"), "-o", str(out / "q.onnx"), "--tiles", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(scratch.glob("*/pre.onnx")) and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "quantize ended before its temporary model was seen"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert not list(out.iterdir())
    left = [p for p in scratch.rglob("*") if "skinseg-cache" not in p.parts and p.name != ".ses"]
    assert not left, left  # its temporary folder is gone (.ses: ONNX Runtime writes it when imported)


def test_a_truly_degraded_int8_is_refused_at_the_default_limits(tmp_path, monkeypatch):
    """Calibrated on flat grey images, the INT8 ranges miss real skin: the gate at its default limits
    (no --max-drop given) refuses it and writes nothing. A shipped name works as in every command,
    and its output goes to the current folder, never into the package."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, v in enumerate((0, 40, 80, 120)):
        cv2.imwrite(str(flat / f"{i}.png"), np.full((192, 256, 3), v, np.uint8))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["quantize", "fp32", "--calibration", str(flat), "--images", str(ISIC256 / "valid"),
                              "--tiles", "4"], terminal_width=250)
    assert res.exit_code == 2, res.output
    assert ("INT8 loses" in res.output or "disagree" in res.output) and "not written" in res.output
    assert not list(tmp_path.glob("*.onnx")) and not list(FP32.parent.glob("*-int8-cpu.onnx"))
