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
    want_int8 = (not _gpu_wanted(provider)) and cpu_int8
    order = ("int8", "fp32") if want_int8 else ("fp32", "int8")
    return next(models[k] for k in order if k in models)


def choose_model(model: str | Path | None, config: Path | None = None, provider: str = "auto") -> Path | None:
    """What --model / a config mean on the command line; None = the shipped default.

    A run folder (or a file in one) means its exported model; a .keras checkpoint is refused with the
    export command; with a config and no --model, the model trained from that config is used, never
    silently the shipped one.
    """
    from skinseg.shared.runfolder import RunFolder

    int8 = not _gpu_wanted(provider)
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
            return run.exported(int8)
        return p
    if config is not None:
        from skinseg.shared.config import load_config

        cfg = load_config(config)
        run = RunFolder.latest(cfg.train.runs_dir, cfg.train.name)
        if run is None:
            raise SkinsegError(f"{config}: no trained run at {Path(cfg.train.runs_dir) / cfg.train.name}; train it "
                               f"(skinseg train {config}) or pass --model (e.g. --model int8 for the shipped model)")
        return run.exported(int8)
    return None


def _gpu_wanted(provider: str) -> bool:
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
