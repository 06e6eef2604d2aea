"""`EngineOptions`: everything that decides what the engine computes, as one checked value.

Every front end (the CLI's infer, eval, bench and quantize, Ray workers, the HTTP service, the
Python API) builds one of these and hands it to `Segmenter`; the options are validated here once,
in the user's terms (the flag names), so no front end repeats the checks. `None` means "what the
model records" (its metadata), else the engine's default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from skinseg.inference.session import GRAPH_OPT
from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import MAX_TILE, OUTPUT_KINDS, postprocess_problem
from skinseg.shared.scale import FROM_MODEL, check_scale

MIN_TILE = 8
MAX_BATCH = 256
POST_FIELDS = ("keep", "min_area", "fill_holes", "blur")


def _number(flag: str, value: Any, *, integer: bool = False) -> None:
    ok = isinstance(value, int if integer else int | float) and not isinstance(value, bool)
    if not ok or (not integer and not math.isfinite(value)):
        raise SkinsegError(f"{flag} {value!r}: expected a finite {'whole ' if integer else ''}number")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs a model on whole images (fields left None come from the model's metadata).

    tile: (h, w) tile; None = the graph's fixed size, else the metadata's, else 512.
    scale: working scale as the long side in px, None for native resolution, "model" for the model's own.
    overlap: tile overlap fraction in [0, 1).
    batch: tiles per session run; 0 = auto (about one 512x512 tile's pixels per run on the CPU, four on a GPU).
    tta: average over horizontal, vertical and double flips (4x the model's work); None = as the model
        records (`skinseg.tta`).
    threshold, keep, min_area, fill_holes, blur: post-processing (see inference/postprocess.py).
    threads: ONNX Runtime intra-op threads (0 = all cores); graph_opt: its optimisation level.
    reduced_decode: decode JPEGs at 1/2-1/8 size when the working scale allows; False = the contract's
        reference path (always full size).
    io_binding: bind inputs/outputs explicitly (None = on when CUDA is active).
    output_kind, input_max: override how the model's output and float input range are read.
    """

    tile: tuple[int, int] | None = None
    scale: int | None | Literal["model"] = FROM_MODEL
    overlap: float | None = None
    batch: int = 0
    tta: bool | None = None
    threshold: float | None = None
    keep: str | None = None
    min_area: int | None = None
    fill_holes: bool | None = None
    blur: float | None = None
    threads: int = 0
    graph_opt: str = "all"
    reduced_decode: bool = True
    io_binding: bool | None = None
    output_kind: str | None = None
    input_max: float | None = None
    max_tiles: int = 20_000  # per image: a 30 MP image at native scale needs about 10,000 at overlap 0.5

    def __post_init__(self) -> None:
        if isinstance(self.tile, int) and not isinstance(self.tile, bool):
            object.__setattr__(self, "tile", (self.tile, self.tile))
        if self.tile is not None:
            tile = tuple(self.tile)
            if len(tile) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in tile) or \
                    not all(MIN_TILE <= v <= MAX_TILE for v in tile):
                raise SkinsegError(f"--tile {'x'.join(map(str, tile))}: each side must be {MIN_TILE} to {MAX_TILE} px")
            object.__setattr__(self, "tile", tile)
        if self.scale != FROM_MODEL:
            check_scale(self.scale, "--scale")
        if self.overlap is not None:
            _number("--overlap", self.overlap)
            if not 0 <= self.overlap < 1:
                raise SkinsegError(f"--overlap {self.overlap}: must be at least 0 and below 1")
        _number("--batch", self.batch, integer=True)
        if not 0 <= self.batch <= MAX_BATCH:
            raise SkinsegError(f"--batch {self.batch}: must be 1 to {MAX_BATCH} (or 0 for auto)")
        if self.threshold is not None:
            _number("--threshold", self.threshold)
            if not 0 < self.threshold <= 1:
                raise SkinsegError(f"--threshold {self.threshold}: must be above 0 and at most 1")
        for name in POST_FIELDS:
            value = getattr(self, name)
            if value is not None and (why := postprocess_problem(name, value)):
                raise SkinsegError(f"--{name.replace('_', '-')} {value!r}: {why}")
        _number("--threads", self.threads, integer=True)
        if not 0 <= self.threads <= 1024:
            raise SkinsegError(f"--threads {self.threads}: must be 0 (all cores) to 1024")
        if self.graph_opt not in GRAPH_OPT:
            raise SkinsegError(f"--graph-opt {self.graph_opt!r} is not one of {', '.join(GRAPH_OPT)}")
        if self.output_kind is not None and self.output_kind not in OUTPUT_KINDS:
            raise SkinsegError(f"output kind {self.output_kind!r}: choose one of {', '.join(OUTPUT_KINDS)}")
        _number("--max-tiles", self.max_tiles, integer=True)
        if not 1 <= self.max_tiles <= 10_000_000:
            raise SkinsegError(f"--max-tiles {self.max_tiles}: must be 1 to 10000000")
        if self.input_max is not None:
            _number("input_max", self.input_max)
            if self.input_max <= 0:
                raise SkinsegError(f"input_max {self.input_max}: must be above 0")

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
