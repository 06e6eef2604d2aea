"""`EngineOptions`: everything that decides what the engine computes, as one checked value, and the one
declaration of each option.

Each field carries an `Option` declaration: its flag and help (cli/flags.py builds the flags from
them), how a flag's text becomes the value, the check in the user's terms, whether it can change a
mask (then it is part of --resume's fingerprint, through `Segmenter.fingerprint`) and where a model
records its own value. A new option touches its field here and its implementation, nothing else.
`None` means "what the model records" (its metadata), else the engine's default.

Import-light on purpose (no OpenCV, no ONNX Runtime): the CLI reads the declarations for --help.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from skinseg import FROM_MODEL
from skinseg.shared.errors import SkinsegError

MIN_TILE = 8
MAX_BATCH = 256
POST_FIELDS = ("keep", "min_area", "fill_holes", "blur")


@dataclass(frozen=True)
class Option:
    """One engine option's declaration."""

    help: str = ""
    flag: str | None = None  # the CLI spelling ('--tta/--no-tta'); None: Python API only
    cli: Any = None  # the flag's value type on the command line
    cli_default: Any = None
    parse: Callable[[Any], Any] | None = None  # the flag's value -> the option's value
    check: Callable[[Any], str | None] | None = None  # why a value is wrong (None: it is fine)
    pixels: bool = True  # can change a mask: --resume refuses outputs made with another value
    recorded: str | None = None  # where a model records its own value (the metadata's key)

    @property
    def name(self) -> str:
        return (self.flag or "").split("/")[0]


def option(default: Any, **declaration: Any) -> Any:
    return field(default=default, metadata={"option": Option(**declaration)})


# -- parsing the CLI's words ------------------------------------------------------------------------
def parse_tile(value: str | None) -> tuple[int, int] | None:
    """'512' or '512x384' (height x width) -> (h, w); sizes are checked by the declaration."""
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
    """'native' -> None, '1024' -> 1024, no value -> the model's own scale."""
    if value is None or value == "":
        return FROM_MODEL
    if value.lower() == "native":
        return None
    try:
        return int(value)
    except ValueError:
        raise SkinsegError(f"--scale {value!r}: expected a long side in pixels (e.g. 1024) or 'native'") from None


# -- checks, in the user's terms --------------------------------------------------------------------
def _number(value: Any, integer: bool = False) -> str | None:
    ok = isinstance(value, int if integer else int | float) and not isinstance(value, bool)
    if not ok or (not integer and not math.isfinite(value)):
        return f"expected a finite {'whole ' if integer else ''}number"
    return None


def _between(lo: float, hi: float, words: str, integer: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return _number(value, integer) or (None if lo <= value <= hi else words)

    return check


def _tile(value: Any) -> str | None:
    from skinseg.shared.metadata import MAX_TILE

    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value) or \
            not all(MIN_TILE <= v <= MAX_TILE for v in value):
        return f"each side must be {MIN_TILE} to {MAX_TILE} px"
    return None


def _scale(value: Any) -> str | None:
    from skinseg.shared.scale import MAX_SCALE, MIN_SCALE

    if value == FROM_MODEL or (isinstance(value, int) and not isinstance(value, bool)
                               and MIN_SCALE <= value <= MAX_SCALE):
        return None
    return f"expected a long side between {MIN_SCALE} and {MAX_SCALE} px, or native"


def _overlap(value: Any) -> str | None:
    return _number(value) or (None if 0 <= value < 1 else "must be at least 0 and below 1")


def _threshold(value: Any) -> str | None:
    return _number(value) or (None if 0 < value <= 1 else "must be above 0 and at most 1")


def _post(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        from skinseg.shared.metadata import postprocess_problem

        return postprocess_problem(name, value)

    return check


def _one_of(choices: tuple[str, ...] | Callable[[], tuple[str, ...]]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        allowed = choices() if callable(choices) else choices
        return None if value in allowed else f"is not one of {', '.join(allowed)}"

    return check


def _graph_levels() -> tuple[str, ...]:
    from skinseg.inference.session import GRAPH_OPT

    return GRAPH_OPT


def _output_kinds() -> tuple[str, ...]:
    from skinseg.shared.metadata import OUTPUT_KINDS

    return OUTPUT_KINDS


def _positive(value: Any) -> str | None:
    return _number(value) or (None if value > 0 else "must be above 0")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs a model on whole images (fields left None come from the model's metadata);
    each field's declaration (`Option`) says what it does."""

    tile: tuple[int, int] | None = option(
        None, flag="--tile", cli=str | None, parse=parse_tile, check=_tile, recorded="tile",
        help="Tile N or HxW (dynamic-size models only).")
    scale: int | None | Literal["model"] = option(
        FROM_MODEL, flag="--scale", cli=str | None, parse=parse_scale, check=_scale, recorded="scale",
        help="Working scale: long side in px, or 'native'. Default: the model's.")
    overlap: float | None = option(
        None, flag="--overlap", cli=float | None, check=_overlap, recorded="tiling.overlap",
        help="Tile overlap fraction (default: the model's, else 0.5).")
    batch: int = option(
        0, flag="--batch", cli=int, cli_default=0, pixels=False,
        check=_between(0, MAX_BATCH, f"must be 1 to {MAX_BATCH} (or 0 for auto)", integer=True),
        help="Tiles per session run (0 = auto from tile size and device).")
    tta: bool | None = option(
        None, flag="--tta/--no-tta", cli=bool | None, recorded="tta",
        help="Flip test-time augmentation, 4x the model's work (default: as the model records).")
    threshold: float | None = option(
        None, flag="--threshold", cli=float | None, check=_threshold, recorded="postprocess.threshold",
        help="Lesion probability threshold (default: the model's, else 0.5).")
    keep: str | None = option(
        None, flag="--keep", cli=str | None, check=_post("keep"), recorded="postprocess.keep",
        help="largest | all: connected components to keep.")
    min_area: int | None = option(
        None, flag="--min-area", cli=int | None, check=_post("min_area"), recorded="postprocess.min_area",
        help="With --keep all: smallest component kept (px).")
    fill_holes: bool | None = option(
        None, flag="--fill-holes/--no-fill-holes", cli=bool | None, check=_post("fill_holes"),
        recorded="postprocess.fill_holes", help="Fill holes in the lesion (default: the model's).")
    blur: float | None = option(
        None, flag="--blur", cli=float | None, check=_post("blur"), recorded="postprocess.blur",
        help="Gaussian sigma (px) on the probability before thresholding; 0 = off.")
    threads: int = option(
        0, flag="--threads", cli=int, cli_default=0, pixels=False,
        check=_between(0, 1024, "must be 0 (all cores) to 1024", integer=True),
        help="ONNX Runtime intra-op threads (0 = all cores).")
    graph_opt: str = option(
        "auto", flag="--graph-opt", cli=str, cli_default="auto", check=_one_of(_graph_levels),
        help="ONNX Runtime graph optimisation: auto | disable | basic | extended | all (auto: all, or for "
             "INT8 models on the CPU the faster of extended and all, measured once on this machine).")
    precision: str = option(
        "fp32", flag="--precision", cli=str, cli_default="fp32", check=_one_of(("fp32", "bf16")),
        help="fp32, or bf16 on CPUs with AMX or AVX-512 BF16 through --provider openvino "
             "(masks checked against fp32 in docs/providers.md).")
    reduced_decode: bool = option(
        True, flag="--exact-decode", cli=bool, cli_default=False, parse=lambda exact: not exact,
        help="Decode JPEGs at full size, never at 1/2-1/8 (slower; the model contract's reference path).")
    io_binding: bool | None = option(
        None, pixels=False, help="Bind inputs and outputs explicitly (None: on when CUDA is active).")
    output_kind: str | None = option(
        None, check=_one_of(_output_kinds), recorded="output",
        help="How the model's output is read: probability, logits or softmax.")
    input_max: float | None = option(
        None, check=_positive, recorded="input_max", help="Float models: the value pixel 255 maps to.")
    review_threshold: float | None = option(
        None, flag="--review-threshold", cli=float | None, pixels=False,
        check=_between(0, 1, "must be 0 (never flag) to 1 (flag every mask)"),
        help="Flag masks whose confidence is below this for a person to check (default: the model's own, "
             "chosen on its validation split; 0.65 for a model that records none).")
    max_tiles: int = option(
        20_000, flag="--max-tiles", cli=int, cli_default=20_000, pixels=False,
        check=_between(1, 10_000_000, "must be 1 to 10000000", integer=True),
        help="Most tiles one image may need; more is a usage error (a scale or overlap typo would run for hours).")

    def __post_init__(self) -> None:
        if isinstance(self.tile, int) and not isinstance(self.tile, bool):
            object.__setattr__(self, "tile", (self.tile, self.tile))
        if self.tile is not None:
            object.__setattr__(self, "tile", tuple(self.tile))
        for f in fields(self):
            decl, value = f.metadata["option"], getattr(self, f.name)
            if value is not None and decl.check is not None and (why := decl.check(value)):
                shown = "x".join(map(str, value)) if f.name == "tile" else repr(value)
                raise SkinsegError(f"{decl.name or f.name} {shown}: {why}")

    @classmethod
    def from_flags(cls, **flags: Any) -> EngineOptions:
        """The CLI's values (by field name) as one EngineOptions (the one place flags become options)."""
        values = {}
        for name, value in flags.items():
            decl = cls.declaration(name)
            values[name] = decl.parse(value) if decl.parse else value
        return cls(**values)

    @classmethod
    def declaration(cls, name: str) -> Option:
        return next(f.metadata["option"] for f in fields(cls) if f.name == name)

    @classmethod
    def declared(cls) -> dict[str, Option]:
        """Every option's declaration, in the order --help shows the flags."""
        return {f.name: f.metadata["option"] for f in fields(cls)}

    @classmethod
    def pixel_fields(cls) -> tuple[str, ...]:
        """The options that can change a mask (--resume's fingerprint)."""
        return tuple(name for name, decl in cls.declared().items() if decl.pixels)

    def post_overrides(self) -> dict[str, Any]:
        """The post-processing fields set here (the rest come from the model)."""
        return {k: getattr(self, k) for k in POST_FIELDS if getattr(self, k) is not None}

    def with_(self, **changes: Any) -> EngineOptions:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
