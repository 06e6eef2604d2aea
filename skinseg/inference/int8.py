"""Static INT8 (QDQ) for any model the engine can run: calibration tiles, quantizing a file, and the
one accuracy gate that export and `skinseg quantize` both apply.

Two targets, because no one INT8 file serves every runtime well:
- `cpu` (default): uint8 activations, int8 per-channel weights (U8S8), fast in ONNX Runtime on x86.
- `tensorrt`: int8 activations and weights, symmetric (zero point 0), the only Q/DQ TensorRT parses.
Both keep the input normalisation, the first convolution and the output head in FP32: quantizing
the scalar constants of the in-graph normalisation made the file unloadable in OpenCV DNN, and the
head costs accuracy for little speed. The target is recorded in `skinseg.quantization`.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import ui
from skinseg.inference.adapter import ModelAdapter
from skinseg.inference.tiling import pad_to_tile
from skinseg.shared import files
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import load_image
from skinseg.shared.install import install_hint
from skinseg.shared.scale import to_working

TARGETS = ("cpu", "tensorrt")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise SkinsegError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    return target


def _onnx() -> Any:
    try:
        import onnx
        from onnxruntime.quantization import quantize_static  # noqa: F401 - checks the extra is there
    except ImportError as exc:
        raise SkinsegError(f"quantization needs onnx and onnxruntime: {install_hint('cpu')}") from exc
    return onnx


def calibration_tiles(images: list[Path], scale: int | None, tile: tuple[int, int], count: int,
                      resize: dict[str, str] | None = None, seed: int = 0) -> np.ndarray:
    """`count` uint8 RGB tiles cut at random positions from images at the working scale, resized exactly
    as the engine resizes them; unreadable images are skipped with a warning."""
    rng = np.random.default_rng(seed)
    th, tw = tile
    out: list[np.ndarray] = []
    bad: set[Path] = set()
    for i in range(count * 4):
        if len(out) == count or len(bad) == len(images):
            break
        path = images[i % len(images)]
        if path in bad:
            continue
        try:
            loaded = load_image(path, scale)
        except InputError as exc:
            bad.add(path)
            ui.warn(f"calibration image skipped: {exc}")
            continue
        img = pad_to_tile(to_working(loaded.rgb, (loaded.height, loaded.width), scale, resize), th, tw)
        y = int(rng.integers(0, img.shape[0] - th + 1))
        x = int(rng.integers(0, img.shape[1] - tw + 1))
        out.append(img[y : y + th, x : x + tw])
    if not out:
        raise SkinsegError(f"no readable calibration images among {len(images)} files")
    return np.stack(out)


def fp32_islands(model: Any) -> list[str]:
    """Nodes kept in FP32: everything up to and including the first convolution (input cast and
    normalisation), and the output head (the last convolution onwards)."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return list(dict.fromkeys([n.name for n in nodes[: convs[0] + 1]] + [n.name for n in nodes[convs[-1]:]]))


def quantize_file(fp32: Path, out: Path, adapter: ModelAdapter, tiles: np.ndarray, target: str = "cpu") -> None:
    """Static QDQ INT8 of `fp32` calibrated on uint8 tiles (fed as the model expects them), metadata kept."""
    onnx = _onnx()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_target(target)
    name = adapter.spec.input_name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(tiles[i : i + 1] for i in range(len(tiles)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {name: np.ascontiguousarray(adapter.to_model_input(x))}

    trt = target == "tensorrt"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        prepared = onnx.load(str(pre))
        for i, node in enumerate(prepared.graph.node):  # exclusions go by name: an unnamed node (common
            node.name = node.name or f"skinseg_node_{i}"  # in models from elsewhere) would match all of them
        onnx.save(prepared, str(pre))
        q = Path(tmp) / "q.onnx"
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if trt else QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=fp32_islands(prepared),
                        extra_options={"ActivationSymmetric": trt, "WeightSymmetric": True,
                                       "QuantizeBias": not trt})  # TensorRT takes FP32 biases, no int32 DQ
        model = onnx.load(str(q))
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        raise SkinsegError(f"{fp32}: nothing in this model can be quantized (the input through the first "
                           "convolution and the head from the last one stay FP32, and it has no convolution "
                           "between them); use the FP32 model as it is")
    source = onnx.load(str(fp32), load_external_data=False)
    props = {p.key: p.value for p in source.metadata_props}
    if props.get("skinseg.format"):
        props["skinseg.precision"] = "int8"
    props["skinseg.quantization"] = json.dumps({
        "target": target, "activations": "int8 symmetric" if trt else "uint8", "weights": "int8 per-channel",
        "calibration_tiles": len(tiles), "fp32_sha256": files.sha256_file(fp32)})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.ir_version = min(model.ir_version, max(source.ir_version, 8))
    files.write_bytes(out, model.SerializeToString())


def tensorrt_problems(model: Any) -> list[str]:
    """Why TensorRT would not parse this model's Q/DQ: activation or weight QuantizeLinear /
    DequantizeLinear that is not int8 with zero point 0."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3:
            continue
        zp = inits.get(n.input[2])
        if zp is None:
            continue
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{n.name}: zero point is {TensorProto.DataType.Name(zp.data_type)}, not INT8")
        elif np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{n.name}: zero point is not 0")
    return problems




# -- the gate: one metric (Jaccard), one rule ---------------------------------------------------------
MAX_LOSS = 0.5  # Jaccard points an INT8 model may lose against ground truth
MAX_DISAGREEMENT = 3.0  # without ground truth: points of mask disagreement with the FP32 model


@dataclass
class Gate:
    """How an INT8 model's masks compare with its FP32 source's on the same images."""

    images: int
    agreement: float  # mean Jaccard between the FP32 and the INT8 masks
    fp32_jaccard: float | None  # against ground truth, when there is one
    int8_jaccard: float | None
    loss: float  # points: Jaccard lost against truth, else disagreement with FP32
    limit: float
    measure: str
    disagreement_limit: float = MAX_DISAGREEMENT

    @property
    def disagreement(self) -> float:
        """Points of mask disagreement with FP32 (100 x (1 - agreement))."""
        return (1 - self.agreement) * 100

    @property
    def passed(self) -> bool:
        return self.loss <= self.limit and self.disagreement <= self.disagreement_limit

    def enforce(self, target: str, force: bool, hint: str) -> None:
        """Refuse a model that fails the gate (unless forced), naming the flag that would help."""
        if self.passed or force:
            return
        if self.loss > self.limit:
            raise SkinsegError(f"INT8 loses {self.loss:.2f} {self.measure} on {self.images} images (target {target}, "
                               f"limit --max-drop {self.limit:g}); not written. {hint}, or --force to keep it")
        raise SkinsegError(f"INT8 masks disagree with FP32's by {self.disagreement:.2f} points of Jaccard on "
                           f"{self.images} images (target {target}, limit --max-disagreement "
                           f"{self.disagreement_limit:g}) although the loss against the masks is only "
                           f"{self.loss:.2f} points; not written. {hint}, or --force to keep it")


def check_limit(flag: str, value: float | None) -> float | None:
    """A gate limit as typed: a finite number of points (NaN would let every model through)."""
    if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
        raise SkinsegError(f"{flag} {value}: expected a finite number of Jaccard points, e.g. 0.5")
    return value


def gate(fp32_masks: list[np.ndarray], int8_masks: list[np.ndarray], truths: list[np.ndarray] | None = None,
         max_drop: float | None = None, max_disagreement: float | None = None) -> Gate:
    """With ground truth: Jaccard points lost against it (limit 0.5) and, as well, agreement with the FP32
    model's masks (at most 3 points of disagreement: a model can match the truth's average while
    drawing other masks); without truth: the disagreement alone (limit 3)."""
    from skinseg.shared.metrics import mean_jaccard

    check_limit("--max-drop", max_drop)
    check_limit("--max-disagreement", max_disagreement)
    if not fp32_masks or len(fp32_masks) != len(int8_masks):
        raise SkinsegError("the INT8 gate needs the same images, at least one, for both models")
    agreement = mean_jaccard(int8_masks, fp32_masks)
    apart = MAX_DISAGREEMENT if max_disagreement is None else max_disagreement
    if truths:
        j32, j8 = mean_jaccard(fp32_masks, truths), mean_jaccard(int8_masks, truths)
        return Gate(len(truths), agreement, j32, j8, (j32 - j8) * 100, MAX_LOSS if max_drop is None else max_drop,
                    "Jaccard points against the masks", apart)
    limit = max_drop if max_drop is not None else apart
    return Gate(len(fp32_masks), agreement, None, None, (1 - agreement) * 100, limit,
                "points of mask agreement with FP32", max(limit, apart))
