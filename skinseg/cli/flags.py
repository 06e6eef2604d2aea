"""The engine's flags, made from the options' declarations (inference/options.py): `@engine_flags` adds
them to a command and hands it one `EngineOptions` value (infer, eval, bench, quantize and serve all
take the same flags the same way). The declarations are import-light, so `skinseg --help` stays fast.
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


def _declared() -> dict[str, tuple[Any, Any]]:
    """name -> (annotation, default) for every engine option that has a flag, from its declaration in
    inference/options.py; the order is the order --help shows."""
    from skinseg.inference.options import EngineOptions

    return {name: (Annotated[d.cli, _opt(d.flag, help=d.help)], d.cli_default)
            for name, d in EngineOptions.declared().items() if d.flag}


ENGINE_FLAGS: dict[str, tuple[Any, Any]] = _declared()

ProviderOpt = Annotated[str, typer.Option("--provider", "-p",
                                          help="auto | cpu | cuda | openvino | tensorrt | any ONNX Runtime provider.")]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", "-m", help="ONNX model, run folder, or fp32 / int8 for a shipped one (default: the shipped one "
    "for this machine).")]


def engine_options(**flags: Any) -> Any:
    """The flag values as one EngineOptions (parsing and checks are the declarations')."""
    from skinseg.inference.options import EngineOptions

    return EngineOptions.from_flags(**flags)


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
