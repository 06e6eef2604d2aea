"""The model's self-description (ONNX `metadata_props`, keys prefixed `skinseg.`): writer and reader
side by side, so what export writes and what the engine reads cannot drift apart.

Format 2 adds `resize` (how pixels go to the working scale and back) and `tiling` (overlap, Gaussian
sigma, padding) to format 1; format 3 adds `tta` (whether the model should run with flip test-time
augmentation); format 4 adds `review_threshold` (confidence below which a mask is flagged for a
person to check, chosen by export on the validation split). Older files read with the rules they
were made with (area down, linear up, overlap 0.5, sigma tile/8, edge padding, no TTA, the engine's
default review threshold).
docs/model-contract.md states what every key means for a client.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from skinseg.shared.errors import SkinsegError
from skinseg.shared.scale import DEFAULT_RESIZE, MAX_SCALE, METHODS, MIN_SCALE, check_scale

PREFIX = "skinseg."
FORMAT_VERSION = "4"
READABLE_FORMATS = ("1", "2", "3", "4")
OUTPUT_KINDS = ("probability", "logits", "softmax")
LAYOUTS = ("NHWC", "NCHW")
INPUT_DTYPES = ("uint8", "float32", "float16")
KEEP_CHOICES = ("largest", "all")
MAX_TILE = 4096  # px per tile side: larger is a broken file, not a model (its tiles would not fit in memory)
MAX_BLUR = 100.0  # px; a larger sigma blurs a dermoscopy image into one colour
DEFAULT_POSTPROCESS: dict[str, Any] = {"blur": 0.0, "keep": "largest", "min_area": 0, "fill_holes": True}


def postprocess_problem(name: str, value: Any) -> str | None:
    """Why `value` is not a valid post-processing option `name` (None when it is): the one check that
    the engine's options and the metadata reader share."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name == "blur":
        ok = number and math.isfinite(value) and 0 <= value <= MAX_BLUR
        return None if ok else f"expected a Gaussian sigma from 0 to {MAX_BLUR:g} px"
    if name == "keep":
        return None if value in KEEP_CHOICES else f"choose one of {', '.join(KEEP_CHOICES)}"
    if name == "min_area":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else "expected a whole number of pixels, at least 0"
    if name == "fill_holes":
        return None if isinstance(value, bool) else "expected true or false"
    if name == "threshold":
        ok = number and math.isfinite(value) and 0 < value <= 1
        return None if ok else "must be above 0 and at most 1"
    return "not a post-processing option"


# How tiles are cut and blended (docs/model-contract.md, "Tiling"); the engine reads these.
DEFAULT_TILING: dict[str, Any] = {"overlap": 0.5, "sigma_scale": 0.125, "pad": "edge"}
# Provenance keys: written for people, never read by the engine.
PROVENANCE = ("precision", "backbone", "decoder", "config", "dataset", "metrics", "versions", "opset", "created",
              "source", "source_sha256", "quantization", "review")


class MetadataError(SkinsegError):
    """The model file describes itself wrongly: a model error (exit code 2)."""


@dataclass
class ModelMetadata:
    """What a model says about itself; None = not stated (plain models), the engine infers it."""

    format: str | None = None
    layout: str | None = None
    channel_order: str = "RGB"
    input_dtype: str | None = None
    input_range: tuple[float, float] | None = None
    output: str | None = None
    tile: tuple[int, int] | None = None  # (height, width)
    scale: int | None = None  # long side in px; None = native
    threshold: float | None = None
    postprocess: dict[str, Any] = field(default_factory=dict)
    resize: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RESIZE))
    tiling: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TILING))
    tta: bool = False  # run with flip test-time augmentation (export decides from the validation split)
    review_threshold: float | None = None  # flag masks less confident than this (None: the engine's default)
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def self_describing(self) -> bool:
        return self.format is not None

    # -- writer ------------------------------------------------------------------------------------
    def to_props(self) -> dict[str, str]:
        """`skinseg.*` key/value strings for onnx metadata_props."""
        props = {
            "format": FORMAT_VERSION,
            "layout": self.layout or "NHWC",
            "channel_order": self.channel_order,
            "input_dtype": self.input_dtype or "uint8",
            "input_range": ",".join(f"{v:g}" for v in (self.input_range or (0, 255))),
            "output": self.output or "probability",
            "scale": str(self.scale) if self.scale else "native",
            "threshold": f"{self.threshold if self.threshold is not None else 0.5:g}",
            "postprocess": json.dumps(DEFAULT_POSTPROCESS | self.postprocess),
            "resize": json.dumps(DEFAULT_RESIZE | self.resize),
            "tiling": json.dumps(DEFAULT_TILING | self.tiling),
            "tta": "true" if self.tta else "false",
        }
        if self.review_threshold is not None:
            props["review_threshold"] = f"{self.review_threshold:g}"
        if self.tile:
            props["tile_height"], props["tile_width"] = str(self.tile[0]), str(self.tile[1])
        props |= {k: v for k, v in self.provenance.items() if k in PROVENANCE}
        return {PREFIX + k: v for k, v in props.items()}

    # -- reader ------------------------------------------------------------------------------------
    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "model") -> ModelMetadata:
        """Parse and validate; any bad value is a MetadataError naming the key."""
        meta = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        r = _Reader(meta, where)
        fmt = meta.get("format")
        if fmt is not None and fmt not in READABLE_FORMATS:
            raise MetadataError(f"{where}: metadata {PREFIX}format={fmt!r} is newer than this skinseg reads "
                                f"({', '.join(READABLE_FORMATS)}); upgrade skinseg")
        th, tw = r.int("tile_height", lo=1, hi=MAX_TILE), r.int("tile_width", lo=1, hi=MAX_TILE)
        if (th is None) != (tw is None):
            raise MetadataError(f"{where}: metadata has only one of {PREFIX}tile_height and {PREFIX}tile_width")
        return cls(
            format=fmt,
            layout=r.choice("layout", LAYOUTS),
            channel_order=(r.choice("channel_order", ("RGB", "BGR")) or "RGB"),
            input_dtype=r.choice("input_dtype", INPUT_DTYPES),
            input_range=r.range("input_range"),
            output=r.choice("output", OUTPUT_KINDS),
            tile=(th, tw) if th and tw else None,
            scale=r.scale("scale"),
            threshold=r.probability("threshold"),
            postprocess=r.postprocess("postprocess"),
            resize=r.resize("resize"),
            tiling=r.tiling("tiling"),
            tta=bool(r.boolean("tta")),
            review_threshold=r.unit("review_threshold"),
            provenance={k: v for k, v in meta.items() if k in PROVENANCE},
        )


class _Reader:
    """Typed access to raw metadata strings; every failure names the key and the value found."""

    def __init__(self, meta: dict[str, str], where: str) -> None:
        self.meta, self.where = meta, where

    def fail(self, key: str, expected: str) -> MetadataError:
        return MetadataError(f"{self.where}: metadata {PREFIX}{key}={self.meta[key]!r} is invalid: expected "
                             f"{expected}; re-export the model or pass the value as an option")

    def raw(self, key: str) -> str | None:
        v = self.meta.get(key)
        return None if v is None or v.strip() == "" else v.strip()

    def int(self, key: str, lo: int, hi: int = 2**31) -> int | None:
        v = self.raw(key)
        if v is None:
            return None
        try:
            n = int(v)
        except ValueError:
            raise self.fail(key, f"an integer from {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise self.fail(key, f"an integer from {lo} to {hi}")
        return n

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        v = self.raw(key)
        if v is None:
            return None
        for c in choices:
            if v.lower() == c.lower():
                return c
        raise self.fail(key, "one of " + ", ".join(choices))

    def scale(self, key: str) -> int | None:
        v = self.raw(key)
        if v is None or v.lower() == "native":
            return None
        try:
            return check_scale(int(v))
        except (ValueError, SkinsegError):
            raise self.fail(key, f"a long side in pixels ({MIN_SCALE} to {MAX_SCALE}) or native") from None

    def boolean(self, key: str) -> bool | None:
        v = self.raw(key)
        if v is None:
            return None
        if v.lower() not in ("true", "false"):
            raise self.fail(key, "true or false")
        return v.lower() == "true"

    def probability(self, key: str) -> float | None:
        v = self.raw(key)
        if v is None:
            return None
        try:
            p = float(v)
        except ValueError:
            raise self.fail(key, "a number between 0 and 1") from None
        if not (math.isfinite(p) and 0 < p <= 1):
            raise self.fail(key, "a number between 0 and 1")
        return p

    def unit(self, key: str) -> float | None:
        """A number from 0 to 1, both included."""
        v = self.raw(key)
        try:
            p = None if v is None else float(v)
        except ValueError:
            raise self.fail(key, "a number from 0 to 1") from None
        if p is not None and not (math.isfinite(p) and 0 <= p <= 1):
            raise self.fail(key, "a number from 0 to 1")
        return p

    def range(self, key: str) -> tuple[float, float] | None:
        v = self.raw(key)
        if v is None:
            return None
        try:
            lo, hi = (float(x) for x in v.split(","))
        except ValueError:
            raise self.fail(key, "'lo,hi', e.g. 0,255") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise self.fail(key, "'lo,hi' with lo < hi")
        return lo, hi

    def json_dict(self, key: str) -> dict[str, Any]:
        v = self.raw(key)
        if v is None:
            return {}
        try:
            d = json.loads(v)
        except json.JSONDecodeError:
            raise self.fail(key, "a JSON object") from None
        if not isinstance(d, dict):
            raise self.fail(key, "a JSON object")
        return d

    def postprocess(self, key: str) -> dict[str, Any]:
        d = self.json_dict(key)
        if set(d) - set(DEFAULT_POSTPROCESS) or any(postprocess_problem(k, v) for k, v in d.items()):
            raise self.fail(key, 'a JSON object with blur (0-100), keep (largest|all), min_area (>= 0), '
                                 'fill_holes (true|false)')
        return d

    def tiling(self, key: str) -> dict[str, Any]:
        d = self.json_dict(key)
        ok = not set(d) - set(DEFAULT_TILING)
        num = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
        if "overlap" in d:
            ok &= num(d["overlap"]) and 0 <= d["overlap"] < 1
        if "sigma_scale" in d:
            ok &= num(d["sigma_scale"]) and 0 <= d["sigma_scale"] <= 10
        if "pad" in d:
            ok &= d["pad"] == "edge"
        if not ok:
            raise self.fail(key, "a JSON object with overlap (0 to <1), sigma_scale (0-10), pad (edge)")
        return DEFAULT_TILING | d

    def resize(self, key: str) -> dict[str, str]:
        d = self.json_dict(key)
        if set(d) - set(DEFAULT_RESIZE) or any(v not in METHODS for v in d.values()):
            raise self.fail(key, "a JSON object mapping image_down / image_up / probability to one of "
                                 + ", ".join(METHODS))
        return DEFAULT_RESIZE | d
