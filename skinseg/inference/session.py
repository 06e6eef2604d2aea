"""ONNX Runtime sessions: provider choice that is checked, not assumed.

ONNX Runtime silently falls back to the CPU when a requested provider's libraries are missing, or
when the OpenVINO execution provider refuses one of its options (it logs an error and runs on the CPU
EP), so after creating a session we compare what is active with what was asked for, and say what the
provider refused, from ONNX Runtime's own log line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from skinseg.shared.errors import SkinsegError, first_line
from skinseg.shared.install import install_hint

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
# `auto` order: GPUs first, then the CPU. TensorRT is left out of auto because building its
# engines takes minutes on first use; ask for it explicitly.
AUTO_ORDER = ["CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
              "DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]
GRAPH_OPT = ("auto", "disable", "basic", "extended", "all")  # auto: measured per model and machine (tuning.py)
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
# Libraries onnxruntime-gpu 1.2x/1.3x loads for CUDA 12/13 and cuDNN 9 (checked by `doctor`).
CUDA_LIBS = {
    "CUDA runtime": ["libcudart.so.13", "libcudart.so.12"],
    "cuBLAS": ["libcublas.so.13", "libcublas.so.12"],
    "cuDNN 9": ["libcudnn.so.9"],
    "cuFFT": ["libcufft.so.12", "libcufft.so.11"],
    "TensorRT": ["libnvinfer.so.10"],
}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SkinsegError(
            f"ONNX Runtime is not installed: {install_hint('cpu')} (or the gpu extra for CUDA)"
        ) from exc
    with contextlib.suppress(Exception):  # a run writes inside its output folder, not a telemetry cache
        ort.disable_telemetry_events()
    return ort


def provider_name(name: str) -> str:
    """Map a short name (cpu, cuda, tensorrt...) or a full ONNX Runtime name to the full name."""
    low = name.strip().lower()
    if low in ALIASES:
        return ALIASES[low]
    ort = _ort()
    for full in ort.get_all_providers():
        if full.lower() in (low, low + "executionprovider"):
            return full
    choices = ", ".join(["auto", *ALIASES])
    raise SkinsegError(f"unknown --provider {name!r}; choose one of {choices}")


def find_libraries() -> dict[str, str | None]:
    """For each CUDA library group, the first soname that loads, or None."""
    found: dict[str, str | None] = {}
    for label, names in CUDA_LIBS.items():
        found[label] = None
        for soname in names:
            try:
                ctypes.CDLL(soname)
                found[label] = soname
                break
            except OSError:
                continue
    return found


def _preload_gpu_libraries() -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN installed from pip wheels (nvidia-*), when it can."""
    ort = _ort()
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):  # best effort: the active-provider check reports failures
            preload()


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version line, or None when this machine has no NVIDIA driver."""
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def _missing_reason(provider: str) -> str:
    ort = _ort()
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and nvidia_driver() is None:
        return "this machine has no NVIDIA driver, so no GPU to run on; reinstalling packages cannot help"
    if provider not in ort.get_available_providers():
        if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            return f"this onnxruntime build has no GPU support: pip uninstall onnxruntime && {install_hint('gpu')}"
        return f"this onnxruntime build does not include it (available: {', '.join(ort.get_available_providers())})"
    missing = [label for label, so in find_libraries().items() if so is None and label != "TensorRT"]
    if provider == "TensorrtExecutionProvider" and find_libraries()["TensorRT"] is None:
        missing.append("TensorRT 10")
    if missing:
        return f"libraries not found: {', '.join(missing)} (onnxruntime-gpu needs CUDA 13 and cuDNN 9)"
    return "ONNX Runtime could not initialise it (no GPU visible? check nvidia-smi and `skinseg doctor`)"


def openvino_options(threads: int, precision: str) -> dict[str, str]:
    """The OpenVINO EP's options: the CPU device, threads and the precision hint the CPU plugin takes
    (its own `precision` option accepts only FP32 on the CPU). No compiled-model cache: with
    onnxruntime-openvino 1.24 the EP rewrote its blob on every start and started no faster (the seed's
    ResNet50 INT8 compiles in 0.5-0.8 s either way on the developers' Xeon; docs/providers.md)."""
    opts = {"device_type": "CPU",
            "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}})}
    if threads:
        opts["num_of_threads"] = str(threads)
    return opts


def check_precision(precision: str, provider: str) -> None:
    """bf16 runs through the OpenVINO EP on CPUs that compute it in hardware; say so otherwise."""
    if precision == "fp32":
        return
    from skinseg.shared.system import has_bf16

    if provider_name(provider) != "OpenVINOExecutionProvider":
        raise SkinsegError(f"--precision {precision} runs on the OpenVINO execution provider: add --provider openvino "
                           f"({install_hint('openvino')})")
    if not has_bf16():
        raise SkinsegError(f"--precision {precision}: this CPU has no bf16 units (AMX or AVX-512 BF16), so bf16 would "
                           "be emulated and slower than fp32; leave --precision out")


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """What native code writes to stderr inside the block (ONNX Runtime's log of a refused provider),
    kept out of the terminal and handed back as lines."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def _refusal(lines: list[str]) -> str | None:
    """ONNX Runtime's own reason, from its error lines, without colour codes and source locations."""
    for line in lines:
        clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "[ERROR]" in clean or " [E:" in clean:
            text = clean.split("[ERROR]", 1)[-1] if "[ERROR]" in clean else clean.rsplit("] ", 1)[-1]
            return text.replace("[OpenVINO]", "").strip()[:300]
    return None


def create_session(model: str | os.PathLike[str], provider: str = "auto", threads: int = 0,
                   graph_opt: str = "all", precision: str = "fp32"):
    """Create an InferenceSession and verify the active providers.

    Args:
        model: path to an .onnx file.
        provider: 'auto', a short name (cpu, cuda, openvino, tensorrt...) or a full ONNX Runtime provider name.
        threads: intra-op threads (0 = ONNX Runtime's default, all cores).
        graph_opt: graph optimisation level: disable, basic, extended or all ('auto' is resolved by the
            caller; here it means all).
        precision: fp32, or bf16 (OpenVINO EP on CPUs with bf16 units).
    Returns:
        (session, active_providers).
    """
    ort = _ort()
    check_precision(precision, provider)
    path = Path(model)
    if not path.is_file():
        raise SkinsegError(f"model file not found: {path}; pass --model PATH to an .onnx file")
    if path.stat().st_size == 0:
        raise SkinsegError(f"{path}: the model file is empty (0 bytes); export it again or pass another --model")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, threads)
    # Idle intra-op threads sleep instead of spinning: spinning took the cores the engine's reader and
    # writer threads (decoding, encoding) need, and made 2 threads slower than 1 end to end (docs/benchmarks.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "auto": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_opt]
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    on_cpu = provider in ("cpu", "openvino") or (provider == "auto" and not any(p in available for p in GPU_PROVIDERS))
    # The memory-pattern planner preallocates one block for all activations: on the CPU it cost a
    # DeepLabV3+ 512x512 tile 720 MB peak instead of 413 MB, at the same speed.
    opts.enable_mem_pattern = not on_cpu
    if provider == "auto":
        wanted = [p for p in AUTO_ORDER if p in available] or ["CPUExecutionProvider"]
    else:
        wanted = [provider_name(provider)]
        if wanted[0] != "CPUExecutionProvider":
            wanted.append("CPUExecutionProvider")
    if any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in wanted):
        _preload_gpu_libraries()
    requested: list = [(p, openvino_options(threads, precision)) if p == "OpenVINOExecutionProvider" else p
                       for p in wanted]
    try:
        with warnings.catch_warnings(), _native_stderr() as log:  # checked and reported below
            warnings.simplefilter("ignore", UserWarning)
            session = ort.InferenceSession(str(path), sess_options=opts, providers=requested)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
        text = str(exc)
        if "opset" in text.lower():  # say it in the words that help, not a C++ signature
            import re

            asked = re.search(r"Opset (\d+)", text)
            known = re.search(r"support for domain ([\w.]+) is till opset (\d+)", text)
            what = f"opset {asked.group(1)}" if asked else "its opset"
            limit = f" (this one supports {known.group(1)} up to opset {known.group(2)})" if known else ""
            raise SkinsegError(f"{path}: ONNX Runtime {_ort().__version__} cannot load {what}{limit}; export with "
                               "--opset 17 (the default) or upgrade onnxruntime") from exc
        raise SkinsegError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from exc
    active = session.get_providers()
    if provider != "auto" and wanted[0] not in active:
        why = _refusal(log) if wanted[0] in ort.get_available_providers() else None
        raise SkinsegError(
            f"--provider {provider} requested but {wanted[0]} is not active "
            f"({f'it refused: {why}' if why else _missing_reason(wanted[0])}); "
            "use --provider cpu or fix the install (`skinseg doctor` lists what is missing)"
        )
    return session, active
