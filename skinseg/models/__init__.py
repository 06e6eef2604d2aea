"""Models that ship inside the package (package data), and how the engine picks one."""

from __future__ import annotations

from pathlib import Path

from skinseg.shared.errors import SkinsegError

HERE = Path(__file__).parent
FP32 = HERE / "skinseg-fp32.onnx"
INT8 = HERE / "skinseg-int8.onnx"


def shipped_models() -> dict[str, Path]:
    return {name: p for name, p in (("fp32", FP32), ("int8", INT8)) if p.is_file()}


def default_model(provider: str = "auto") -> Path:
    """The shipped model: INT8 on the CPU, FP32 when a GPU provider is asked for."""
    models = shipped_models()
    if not models:
        raise SkinsegError(
            "no model given and none ships with this install yet: pass --model PATH to an .onnx file "
            "(skinseg train + skinseg export make one)"
        )
    gpu = provider.lower() not in ("cpu", "cpuexecutionprovider", "auto")
    if provider == "auto":
        try:
            import onnxruntime as ort

            gpu = "CUDAExecutionProvider" in ort.get_available_providers()
        except ImportError:
            gpu = False
    order = ("fp32", "int8") if gpu else ("int8", "fp32")
    return next(models[k] for k in order if k in models)
