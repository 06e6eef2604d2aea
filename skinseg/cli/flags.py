"""The engine's flags, declared once: `@engine_flags` adds them to a command and hands it one
`EngineOptions` value (infer, eval, bench, quantize and serve all take the same flags the same way).

Strings are parsed here (`512x384`, `native`); everything else is checked by EngineOptions itself.
This module imports no engine code until a command runs, so `skinseg --help` stays fast.
"""

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

PANEL = "Engine options"


def _opt(*names: str, help: str, **kw: Any) -> Any:  # noqa: A002 - typer's own word
    return typer.Option(*names, help=help, rich_help_panel=PANEL, **kw)


# name -> (annotation, default): the order is the order --help shows
ENGINE_FLAGS: dict[str, tuple[Any, Any]] = {
    "scale": (Annotated[str | None, _opt("--scale", help="Working scale: long side in px, or 'native'. Default: "
                                         "the model's.")], None),
    "tile": (Annotated[str | None, _opt("--tile", help="Tile N or HxW (dynamic-size models only).")], None),
    "overlap": (Annotated[float | None, _opt("--overlap", help="Tile overlap fraction (default: the model's, "
                                             "else 0.5).")], None),
    "batch": (Annotated[int, _opt("--batch", help="Tiles per session run (0 = auto from tile size and "
                                  "device).")], 0),
    "threshold": (Annotated[float | None, _opt("--threshold", help="Lesion probability threshold (default: the "
                                               "model's, else 0.5).")], None),
    "tta": (Annotated[bool | None, _opt("--tta/--no-tta", help="Flip test-time augmentation, 4x the model's work "
                                        "(default: as the model records).")], None),
    "keep": (Annotated[str | None, _opt("--keep", help="largest | all: connected components to keep.")], None),
    "min_area": (Annotated[int | None, _opt("--min-area", help="With --keep all: smallest component kept "
                                            "(px).")], None),
    "fill_holes": (Annotated[bool | None, _opt("--fill-holes/--no-fill-holes", help="Fill holes in the lesion "
                                               "(default: the model's).")], None),
    "blur": (Annotated[float | None, _opt("--blur", help="Gaussian sigma (px) on the probability before "
                                          "thresholding; 0 = off.")], None),
    "threads": (Annotated[int, _opt("--threads", help="ONNX Runtime intra-op threads (0 = all cores).")], 0),
    "graph_opt": (Annotated[str, _opt("--graph-opt", help="ONNX Runtime graph optimisation: disable | basic | "
                                      "extended | all.")], "all"),
    "max_tiles": (Annotated[int, _opt("--max-tiles", help="Most tiles one image may need; more is a usage "
                                      "error (a scale or overlap typo would run for hours).")], 20_000),
    "exact_decode": (Annotated[bool, _opt("--exact-decode", help="Decode JPEGs at full size, never at 1/2-1/8 "
                                          "(slower; the model contract's reference path).")], False),
}

ProviderOpt = Annotated[str, typer.Option("--provider", "-p",
                                          help="auto | cpu | cuda | tensorrt | any ONNX Runtime provider.")]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", "-m", help="ONNX model, run folder, or fp32 / int8 for a shipped one (default: the shipped one "
    "for this machine).")]


def parse_tile(value: str | None) -> tuple[int, int] | None:
    """'512' or '512x384' (height x width) -> (h, w); sizes are checked by EngineOptions."""
    from skinseg.shared.errors import SkinsegError

    if not value:
        return None
    try:
        dims = [int(p) for p in value.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2):
        raise SkinsegError(f"--tile {value!r}: expected N or HxW in pixels, e.g. 512 or 384x512")
    return dims[0], dims[-1]


def parse_scale(value: str | None) -> int | None | str:
    """'native' -> None, '1024' -> 1024, no value -> the model's own scale; bounds are EngineOptions'."""
    from skinseg.shared.errors import SkinsegError
    from skinseg.shared.scale import FROM_MODEL

    if value is None or value == "":
        return FROM_MODEL
    if value.lower() == "native":
        return None
    try:
        return int(value)
    except ValueError:
        raise SkinsegError(f"--scale {value!r}: expected a long side in pixels (e.g. 1024) or 'native'") from None


def engine_options(**flags: Any) -> Any:
    """The flag values as one EngineOptions (the one place flags become engine options)."""
    from skinseg.inference.options import EngineOptions

    exact = flags.pop("exact_decode", False)
    return EngineOptions(tile=parse_tile(flags.pop("tile", None)), scale=parse_scale(flags.pop("scale", None)),
                         reduced_decode=not exact, **flags)


def engine_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every engine flag; it receives them as `engine: EngineOptions`."""
    sig = inspect.signature(fn, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "engine"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, (annotation, default) in ENGINE_FLAGS.items()]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
              and p.default is not inspect.Parameter.empty else p for p in own]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in ENGINE_FLAGS}
        return fn(*args, engine=engine_options(**flags), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params + added}
    return wrapper
