"""Which model file a run uses: the shipped ones (skinseg/models/), and what `--model` means.

One home, on the inference side, for picking a model: a path, a shipped precision ('fp32' / 'int8'),
a training run folder (its exported model), a config (the model trained from it) or nothing (the
shipped model for this machine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from skinseg.shared.errors import SkinsegError

if TYPE_CHECKING:
    from skinseg.shared.runfolder import RunFolder

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
    """The shipped model: FP32 on GPU providers, INT8 on the CPU (faster there; README has the figures)."""
    models = shipped_models()
    if not models:
        raise SkinsegError(
            "no model given and none ships with this install: pass --model PATH to an .onnx file "
            "(skinseg train + skinseg export make one)"
        )
    order = ("fp32", "int8") if gpu_wanted(provider) else ("int8", "fp32")
    return next(models[k] for k in order if k in models)


def resolve_model(model: str | os.PathLike[str] | None, provider: str = "auto") -> Path:
    """None = the shipped model for this machine; 'fp32' / 'int8' = that shipped precision; else a path."""
    if model is None:
        return default_model(provider)
    if str(model).lower() in PRECISIONS and not Path(model).exists():
        picked = shipped_models().get(str(model).lower())
        if picked is None:
            raise SkinsegError(f"model {model}: no shipped {model} model in this install")
        return picked
    return Path(model)


def choose_model(model: str | Path | None, config: Path | None = None, provider: str = "auto") -> Path | None:
    """What --model / a config mean on the command line; None = the shipped default.

    A run folder (or a file in one) means its exported model; a .keras checkpoint is refused with the
    export command; with a config and no --model, the model trained from that config is used, never
    silently the shipped one.
    """
    from skinseg.shared.runfolder import RunFolder

    cpu = not gpu_wanted(provider)
    if model is not None:
        p = Path(model)
        run = RunFolder.of(p) if (p.is_dir() or p.suffix == ".keras") else None
        if p.suffix == ".keras":
            where = run.path if run else p
            raise SkinsegError(f"--model {p} is a Keras checkpoint, not an ONNX model: run `skinseg export {where}` "
                               "and pass the .onnx file (or the run folder)")
        if p.is_dir():
            if run is None:
                raise SkinsegError(f"--model {p} is a folder but not a run folder of skinseg train; pass an .onnx file")
            return faster_on_cpu(run) if cpu else run.exported(False)
        return p
    if config is not None:
        from skinseg.shared.config import load_config

        cfg = load_config(config)
        run = RunFolder.latest(cfg.train.runs_dir, cfg.train.name)
        if run is None:
            raise SkinsegError(f"{config}: no trained run at {Path(cfg.train.runs_dir) / cfg.train.name}; train it "
                               f"(skinseg train {config}) or pass --model (e.g. --model int8 for the shipped model)")
        return faster_on_cpu(run) if cpu else run.exported(False)
    return None


def faster_on_cpu(run: RunFolder) -> Path:
    """A run folder's exported model for a CPU run: INT8 (only written when the gate accepted it) when
    it is the faster precision on this CPU, else FP32. Measured here, a few tile runs each: whether INT8
    is faster depends on the CPU (VNNI, AMX) and on the model (a tiny model can be slower in INT8)."""
    from skinseg.inference.adapter import ModelAdapter

    fp32, int8 = run.model, run.variant("int8")
    if not (fp32.is_file() and int8.is_file()):
        return run.exported(True)
    try:
        times = {p: ModelAdapter(p, "cpu").latency_ms(runs=5) for p in (int8, fp32)}
    except SkinsegError:
        return fp32
    return int8 if times[int8] <= times[fp32] else fp32
