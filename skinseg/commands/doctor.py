"""`skinseg doctor`: what this machine can run, without importing TensorFlow."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
from typing import Any

from skinseg.inference.session import find_libraries, nvidia_driver
from skinseg.shared.install import install_hint


def cpu_features() -> dict[str, Any]:
    import os

    from skinseg.shared.system import cpu_flags, cpu_model

    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16"]
    return {"model": cpu_model(), "cores": os.cpu_count(), **{f: f in cpu_flags() for f in wanted}}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def report() -> dict[str, Any]:
    """Versions, providers, GPU libraries and CPU features, as plain data."""
    from skinseg import __version__

    runtimes = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino") if _version(d)}
    providers: list[str] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        pass
    gpu_build = "onnxruntime-gpu" in runtimes
    # Azure's remote-inference provider ships in every build and runs nothing locally: not worth a line
    local = [p for p in providers if p != "AzureExecutionProvider"]
    rep: dict[str, Any] = {
        "skinseg": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime builds installed": runtimes or f"none ({install_hint('cpu')})",
        "providers available": local,
        "cpu": cpu_features(),
        "numpy": _version("numpy"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "onnx": _version("onnx") or "not installed (needed by quantize and convert)",
    }
    if gpu_build or nvidia_driver():  # GPU facts only matter where a GPU build or a GPU is present
        rep["nvidia driver"] = nvidia_driver() or "none (no NVIDIA GPU usable here)"
        rep["gpu libraries"] = find_libraries()
    # find_spec only looks for the package on disk: doctor must never import TensorFlow
    if importlib.util.find_spec("tensorflow") or _version("keras"):
        rep["training side"] = {"tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
                                "keras": _version("keras"), "tf2onnx": _version("tf2onnx")}
    else:
        rep["training side"] = f"not installed: fine for inference ({install_hint('cpu,train')} to train)"
    return rep


def problems(rep: dict[str, Any]) -> list[str]:
    """Things a user should fix, in words."""
    out = []
    runtimes = rep["onnxruntime builds installed"]
    if isinstance(runtimes, dict) and len(runtimes) > 1:
        out.append(f"{' and '.join(runtimes)} are installed; they share one module (onnxruntime) and break each "
                   f"other: pip uninstall -y {' '.join(runtimes)}, then install one of the cpu, gpu, openvino extras")
    if not isinstance(runtimes, dict):
        out.append(f"no ONNX Runtime installed: {install_hint('cpu')} (or the gpu or openvino extra)")
    if isinstance(runtimes, dict) and "onnxruntime-openvino" in runtimes and \
            "OpenVINOExecutionProvider" not in rep["providers available"]:
        out.append("onnxruntime-openvino is installed but its OpenVINO execution provider is not available: "
                   "reinstall it alone (pip uninstall -y onnxruntime onnxruntime-openvino, then the openvino extra)")
    gpu_build = isinstance(runtimes, dict) and "onnxruntime-gpu" in runtimes
    if gpu_build and str(rep.get("nvidia driver", "none")).startswith("none"):
        out.append("onnxruntime-gpu is installed but this machine has no NVIDIA driver: it runs on the CPU "
                   f"provider only; for CPU machines the cpu extra is the one to install ({install_hint('cpu')})")
    if "CUDAExecutionProvider" in rep["providers available"] and "gpu libraries" in rep:
        missing = [k for k, v in rep["gpu libraries"].items() if v is None and k != "TensorRT"]
        if missing:
            out.append(f"onnxruntime-gpu is installed but {', '.join(missing)} not found: CUDA runs will "
                       "fall back to the CPU (install CUDA 13 + cuDNN 9)")
    return out


def show() -> None:
    """The command: the report as a table, then what to fix."""
    from rich.table import Table

    from skinseg import ui

    rep = report()
    table = Table(title="skinseg doctor", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    for k, v in rep.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {'yes' if b is True else 'no' if b is False or b is None else b}"
                          for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(v) or "none"
        table.add_row(k, ui.escape(str(v)))
    ui.out.print(table)
    for p in problems(rep):
        ui.warn(p)
