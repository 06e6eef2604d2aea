"""The shipped model files (skinseg/models/) and what the engine takes as a model: a path, a shipped
precision ('fp32' / 'int8') or nothing (the shipped model for this machine). What a command line's
--model and --config mean beyond that (run folders, checkpoints, configs) is runner/models.py's."""

from __future__ import annotations

import os
from pathlib import Path

from skinseg.shared.errors import SkinsegError

SHIPPED = Path(__file__).resolve().parent.parent / "models"
FP32 = SHIPPED / "skinseg-fp32.onnx"
INT8 = SHIPPED / "skinseg-int8.onnx"
PRECISIONS = ("fp32", "int8")


def shipped_models() -> dict[str, Path]:
    return {name: p for name, p in (("fp32", FP32), ("int8", INT8)) if p.is_file()}


def gpu_wanted(provider: str) -> bool:
    """Whether `provider` will run on a GPU (auto: when CUDA and cuDNN 9 are usable here)."""
    if provider.lower() in ("cpu", "cpuexecutionprovider"):
        return False
    if provider != "auto":
        return True
    try:
        import onnxruntime as ort

        from skinseg.inference.session import find_libraries

        return "CUDAExecutionProvider" in ort.get_available_providers() and bool(find_libraries()["cuDNN 9"])
    except ImportError:
        return False


def default_model(provider: str = "auto") -> Path:
    """The shipped model: FP32 on GPU providers, INT8 on the CPU (faster there; docs/benchmarks.md has the figures)."""
    models = shipped_models()
    if not models:
        raise SkinsegError(
            "no model given and none ships with this install: pass --model PATH to an .onnx file "
            "(skinseg train + skinseg export make one)"
        )
    order = ("fp32", "int8") if gpu_wanted(provider) else ("int8", "fp32")
    return next(models[k] for k in order if k in models)


def names_shipped(model: str | os.PathLike[str]) -> bool:
    """'fp32' / 'int8' (and no file of that name here): a shipped model. Commands that write a model
    derived from it write into the current folder, never into the installed package."""
    return str(model).lower() in PRECISIONS and not Path(model).exists()


def resolve_model(model: str | os.PathLike[str] | None, provider: str = "auto") -> Path:
    """None = the shipped model for this machine; 'fp32' / 'int8' = that shipped precision; else a path."""
    if model is None:
        return default_model(provider)
    if names_shipped(model):
        picked = shipped_models().get(str(model).lower())
        if picked is None:
            raise SkinsegError(f"model {model}: no shipped {model} model in this install")
        return picked
    return Path(model)
