"""Models that ship inside the package (package data), and how the engine picks one."""

from __future__ import annotations

from pathlib import Path

from skinseg.shared.errors import SkinsegError

HERE = Path(__file__).parent
FP32 = HERE / "skinseg-fp32.onnx"
INT8 = HERE / "skinseg-int8.onnx"


def shipped_models() -> dict[str, Path]:
    return {name: p for name, p in (("fp32", FP32), ("int8", INT8)) if p.is_file()}


def default_model(provider: str = "auto", cpu_int8: bool = True) -> Path:
    """The shipped model: FP32 on GPU providers, INT8 on the CPU.

    Measured on a 2-core AVX2 EPYC without VNNI: 7.4 ms (INT8) against 10.8 ms (FP32) per 192x256
    tile; CPUs with VNNI or AMX gain more.
    """
    models = shipped_models()
    if not models:
        raise SkinsegError(
            "no model given and none ships with this install: pass --model PATH to an .onnx file "
            "(skinseg train + skinseg export make one)"
        )
    gpu = provider.lower() not in ("cpu", "cpuexecutionprovider", "auto")
    if provider == "auto":
        try:
            import onnxruntime as ort

            from skinseg.inference.session import find_libraries

            gpu = "CUDAExecutionProvider" in ort.get_available_providers() and bool(find_libraries()["cuDNN 9"])
        except ImportError:
            gpu = False
    want_int8 = (not gpu) and cpu_int8
    order = ("int8", "fp32") if want_int8 else ("fp32", "int8")
    return next(models[k] for k in order if k in models)
