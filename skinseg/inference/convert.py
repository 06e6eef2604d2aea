"""Other formats of a model file, on the inference side (no TensorFlow): one function per target.

`ort`: the ONNX Runtime format phones load (ONNX Runtime Mobile), with batch 1 and fixed shapes so
NNAPI and CoreML can take the graph, the required-operators configuration beside it (for a reduced
ONNX Runtime build), the `skinseg.*` metadata kept, and parity checked against the source file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skinseg.shared.errors import ModelError, SkinsegError
from skinseg.shared.install import install_hint

FP32_TOLERANCE = 1e-4  # largest probability difference a float model may show after conversion
MIN_MASK_JACCARD = 0.99  # quantized models: fused INT8 kernels round differently; masks must still agree


@dataclass
class Converted:
    """What a conversion wrote and measured."""

    files: list[Path]
    max_difference: float
    mask_jaccard: float
    mobile: dict[str, dict[str, Any]] = field(default_factory=dict)  # EP -> partition figures, converted
    mobile_source: dict[str, dict[str, Any]] = field(default_factory=dict)  # the same for the source as it is
    metadata_kept: bool = False


def _tools() -> Any:
    try:
        import onnx  # noqa: F401
        from onnxruntime.tools import convert_onnx_models_to_ort  # noqa: F401
    except ImportError:
        raise SkinsegError(f"skinseg convert needs onnx and onnxruntime: {install_hint('cpu')}") from None
    import onnx

    return onnx


def fixed_batch_one(source: Path, out: Path) -> None:
    """A copy of the model with every input and output at batch 1 and no dynamic dimension left."""
    onnx = _tools()
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model = onnx.load(str(source))
    for inp in model.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise ModelError(f"{source}: input {inp.name} has a dynamic size {dims}; phones need a fixed tile (export "
                             "one with skinseg export, which fixes the tile)")
        make_input_shape_fixed(model.graph, inp.name, [1, *dims[1:]])
    fix_output_shapes(model)
    onnx.save(model, str(out))


def mobile_partitions(model_path: Path) -> dict[str, dict[str, Any]]:
    """ONNX Runtime's usability checker, per execution provider: nodes it takes, partitions, verdict."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    checks: dict[str, Callable[[Any], Any]] = {
        "NNAPI": lambda m: uc.check_nnapi_partitions(m, True),
        "CoreML MLProgram": lambda m: uc.check_coreml_partitions(m, True, "coreml_supported_mlprogram_ops.md"),
        "CoreML NeuralNetwork": lambda m: uc.check_coreml_partitions(m, True, "coreml_supported_neuralnetwork_ops.md"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / model_path.name
        optimize_model(model_path, optimized, use_external_initializers=True)  # as the checker does
        model = uc.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        report = {}
        for name, check in checks.items():
            info = check(model)
            report[name] = {"nodes": info.num_nodes, "supported": info.num_supported_nodes,
                            "partitions": info.num_partitions, "verdict": info.suitability().name}
    return report


def parity(source: Path, converted: Path, images: list[np.ndarray]) -> tuple[float, float]:
    """(largest probability difference, mean mask Jaccard) of the converted file against its source,
    both through the engine infer uses."""
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared.metrics import mean_jaccard

    a, b = Segmenter(source, "cpu"), Segmenter(converted, "cpu")
    pa, pb = [a.predict(img) for img in images], [b.predict(img) for img in images]
    diff = max(float(np.abs(x.probability - y.probability).max()) for x, y in zip(pa, pb, strict=True))
    return diff, mean_jaccard([y.mask for y in pb], [x.mask for x in pa])


def probe_images() -> list[np.ndarray]:
    from skinseg.shared.synthetic import synth_pair

    return [synth_pair(h, w, rng=i)[0] for i, (h, w) in enumerate(((192, 256), (600, 800), (1536, 2048)))]


def to_ort(source: Path, out: Path) -> Converted:
    """`source` as a batch-1, fixed-shape ORT-format model at `out`, with `<out stem>.required_operators.config`."""
    _tools()
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    quantized = _is_quantized(source)
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / f"{out.stem}.onnx"
        fixed_batch_one(source, fixed)
        built = Path(tmp) / "ort"
        quiet = io.StringIO()
        for name in ("ort_format_model", "ort_format_model.utils"):  # it logs each file it writes at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                convert_onnx_models_to_ort(fixed, output_dir=built, target_platform="arm",
                                           optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:  # the converter raises its own and onnxruntime's types
            raise ModelError(f"{source}: ONNX Runtime could not convert it to the ORT format ({exc})") from exc
        ort_file = next(built.glob("*.ort"), None)
        config = next(built.glob("*.config"), None)
        if ort_file is None or config is None:
            raise ModelError(f"{source}: the ORT converter wrote no model: {quiet.getvalue().strip()[-300:]}")
        mobile = mobile_partitions(fixed)
        diff, agreement = parity(source, ort_file, probe_images())
        if (diff > FP32_TOLERANCE and not quantized) or agreement < MIN_MASK_JACCARD:
            raise ModelError(f"{source}: the ORT-format model differs from its source (probability difference "
                             f"{diff:.2e}, mask Jaccard {agreement:.4f}); nothing written")
        out.parent.mkdir(parents=True, exist_ok=True)
        config_out = out.with_name(f"{out.stem}.required_operators.config")
        shutil.move(str(ort_file), out)
        shutil.move(str(config), config_out)
    return Converted([out, config_out], diff, agreement, mobile, mobile_partitions(source),
                     metadata_kept=_metadata_kept(source, out))


def _is_quantized(path: Path) -> bool:
    onnx = _tools()
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(path)).graph.node)


def _metadata_kept(source: Path, converted: Path) -> bool:
    from skinseg.inference.session import create_session

    def props(path: Path) -> dict[str, str]:
        session, _ = create_session(path, "cpu")
        return {k: v for k, v in session.get_modelmeta().custom_metadata_map.items() if k.startswith("skinseg.")}

    return bool(props(source)) and props(source) == props(converted)


TARGETS: dict[str, tuple[str, Callable[[Path, Path], Converted]]] = {
    "ort": (".ort", to_ort),
}


def convert(source: Path, target: str, out: Path | None = None) -> Converted:
    """Convert `source` to `target` (one of TARGETS), beside it unless `out` is given."""
    if target not in TARGETS:
        raise SkinsegError(f"--to {target!r}: choose one of {', '.join(TARGETS)}")
    if not Path(source).is_file():
        raise SkinsegError(f"{source}: no such model file")
    suffix, fn = TARGETS[target]
    out = Path(out) if out else Path(source).with_suffix(suffix)
    if out.resolve() == Path(source).resolve():
        raise SkinsegError(f"-o {out} is the model being converted; choose another name")
    return fn(Path(source), out)
