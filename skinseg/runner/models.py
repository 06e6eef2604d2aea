"""What a command line's --model and --config mean, decided above the engine: a path or a shipped
precision (the engine's own words), a training run folder (its exported model, the faster precision on
this CPU), a .keras checkpoint (refused with the export command), a config (the model trained from it,
and its [mask] section as engine options). infer and eval both come here, so the same config runs the
same engine in both."""

from __future__ import annotations

from pathlib import Path

from skinseg.inference.adapter import ModelAdapter
from skinseg.inference.model_files import gpu_wanted
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.shared.errors import SkinsegError
from skinseg.shared.runfolder import RunFolder


def choose_model(model: str | Path | None, config: Path | None = None, provider: str = "auto") -> Path | None:
    """What --model / a config mean on the command line; None = the shipped default.

    A run folder (or a file in one) means its exported model; a .keras checkpoint is refused with the
    export command; with a config and no --model, the model trained from that config is used, never
    silently the shipped one.
    """
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
    fp32, int8 = run.model, run.variant("int8")
    if not (fp32.is_file() and int8.is_file()):
        return run.exported(True)
    try:
        times = {p: ModelAdapter(p, "cpu").latency_ms(runs=5) for p in (int8, fp32)}
    except SkinsegError:
        return fp32
    return int8 if times[int8] <= times[fp32] else fp32


def config_engine(config: Path | None, engine: EngineOptions) -> EngineOptions:
    """The engine options with a config's [mask] section under the flags (a flag given wins)."""
    if config is None:
        return engine
    from skinseg.shared.config import load_config

    cfg = load_config(config)
    return engine.with_(threshold=cfg.mask.threshold if engine.threshold is None else engine.threshold,
                        blur=cfg.blur_sigma if engine.blur is None else engine.blur)


def provider_notes(seg: Segmenter) -> list[str]:
    """What auto measured (and where that choice is kept), when it applies."""
    from skinseg.shared.system import cache_dir

    choice = seg.adapter.choice
    return [f"auto chose {choice}; kept in {cache_dir() / 'choices.json'}"] if choice else []
