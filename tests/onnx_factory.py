"""Tiny ONNX models whose output is a known function of the input (so expected masks are exact).

The "pointwise" model computes lesion probability p = 1 - R/255 from the red channel; the "box"
model averages p over a k x k window (zero padding), which makes tiles interact at their borders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def make_model(
    path: Path,
    layout: str = "NHWC",
    dtype: str = "float32",
    output: str = "probability",
    tile: tuple[int, int] | None = None,
    batch: int | None = None,
    box: int = 0,
    metadata: dict[str, str] | None = None,
    output_rank: int = 4,
    opset: int = 17,
) -> Path:
    """Write a model: input image -> lesion map. tile=None gives dynamic H, W."""
    h, w = tile if tile else ("H", "W")
    n = batch if batch else "N"
    in_shape = [n, h, w, 3] if layout == "NHWC" else [n, 3, h, w]
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    nodes, inits = [], []
    x = "image"
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT))
        inits.append(_const("inv255", np.array(1 / 255, np.float32)))
        nodes.append(helper.make_node("Mul", ["xf", "inv255"], ["x01"]))
        x = "x01"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["xc"], perm=[0, 3, 1, 2]))
        x = "xc"
    # red channel (N,1,H,W)
    inits += [_const("s0", np.array([0], np.int64)), _const("s1", np.array([1], np.int64)),
              _const("ax1", np.array([1], np.int64)), _const("one", np.array(1.0, np.float32))]
    nodes.append(helper.make_node("Slice", [x, "s0", "s1", "ax1"], ["red"]))
    nodes.append(helper.make_node("Sub", ["one", "red"], ["p"]))
    p = "p"
    if box:
        k = np.full((1, 1, box, box), 1.0 / (box * box), np.float32)
        inits.append(_const("boxw", k))
        nodes.append(helper.make_node("Conv", [p, "boxw"], ["pb"], pads=[box // 2] * 4))
        p = "pb"
    if output in ("logits", "softmax"):
        inits += [_const("half", np.array(0.5, np.float32)), _const("twenty", np.array(20.0, np.float32))]
        nodes.append(helper.make_node("Sub", [p, "half"], ["pc"]))
        nodes.append(helper.make_node("Mul", ["pc", "twenty"], ["logit"]))
        p = "logit"
        if output == "softmax":
            nodes.append(helper.make_node("Mul", [p, "half"], ["lhalf"]))
            nodes.append(helper.make_node("Neg", ["lhalf"], ["nhalf"]))
            nodes.append(helper.make_node("Concat", ["nhalf", "lhalf"], ["two"], axis=1))
            p = "two"
    ch = 2 if output == "softmax" else 1
    if output_rank == 3:
        nodes.append(helper.make_node("Squeeze", [p, "ax1"], ["out"]))
        out_shape = [n, h, w]
    elif layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [p], ["out"], perm=[0, 2, 3, 1]))
        out_shape = [n, h, w, ch]
    else:
        nodes.append(helper.make_node("Identity", [p], ["out"]))
        out_shape = [n, ch, h, w]
    out_name = "logits" if output == "logits" else "mask"
    nodes[-1].output[0] = out_name
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("image", elem, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def expected_probability(rgb: np.ndarray) -> np.ndarray:
    return 1.0 - rgb[..., 0].astype(np.float32) / 255.0


def stripes(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An RGB test image whose red channel makes blocks of lesion / background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    lesion = (((yy // 37) + (xx // 53)) % 2 == 0)
    img[..., 0] = np.where(lesion, 40, 220)
    return img
