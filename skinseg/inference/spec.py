"""What a model expects and returns, read from the graph and its metadata_props.

Models written by `skinseg export` describe themselves (keys below, prefixed `skinseg.`); plain
models from elsewhere are understood from their shapes plus documented defaults, and CLI flags
override both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinseg.shared.errors import SkinsegError

META_PREFIX = "skinseg."
FORMAT_VERSION = "1"
DEFAULT_TILE = 512
DEFAULT_THRESHOLD = 0.5
OUTPUT_KINDS = ("probability", "logits", "softmax")


@dataclass
class ModelSpec:
    """Everything the engine needs to feed a model and read its answer."""

    input_name: str
    output_name: str
    layout: str  # "NHWC" or "NCHW"
    output_layout: str  # "NHWC", "NCHW" or "NHW"
    input_dtype: type  # np.uint8, np.float32 or np.float16
    input_max: float = 1.0  # float models: pixel 255 maps to this (1.0 = [0,1], 255.0 = [0,255])
    channel_order: str = "RGB"
    tile: tuple[int, int] | None = None  # fixed (height, width) from the graph
    fixed_batch: int | None = None
    output_kind: str = "probability"
    scale: int | None = None  # working scale: long side in px, None = native
    threshold: float = DEFAULT_THRESHOLD
    postprocess: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def self_describing(self) -> bool:
        return self.metadata.get(META_PREFIX + "format") is not None

    def describe(self) -> dict[str, Any]:
        tile = f"{self.tile[0]}x{self.tile[1]}" if self.tile else "dynamic"
        return {
            "input": f"{self.input_name} {self.layout} {np.dtype(self.input_dtype).name} {self.channel_order}",
            "output": f"{self.output_name} {self.output_layout} {self.output_kind}",
            "tile": tile,
            "batch": self.fixed_batch or "dynamic",
            "scale": self.scale or "native",
            "threshold": self.threshold,
        }


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _shape_str(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def _meta_int(meta: dict[str, str], key: str) -> int | None:
    raw = meta.get(META_PREFIX + key)
    if raw in (None, "", "native"):
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise SkinsegError(f"model metadata {META_PREFIX}{key}={raw!r} is not an integer") from exc


def read_spec(session: Any) -> ModelSpec:
    """Build a ModelSpec from an onnxruntime.InferenceSession (graph shapes + metadata_props)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    meta = dict(session.get_modelmeta().custom_metadata_map or {})
    if len(inputs) != 1 or len(outputs) < 1:
        found = ", ".join(f"{i.name}{_shape_str(i.shape)}" for i in inputs) or "none"
        raise SkinsegError(f"model must have exactly one image input, found {len(inputs)}: {found}")
    inp, out = inputs[0], outputs[0]
    ishape = list(inp.shape)
    if len(ishape) != 4:
        raise SkinsegError(
            f"model input {inp.name!r} has shape {_shape_str(ishape)}; expected 4-D NHWC [N,H,W,3] or NCHW [N,3,H,W]"
        )
    dims = [_dim(d) for d in ishape]
    layout = meta.get(META_PREFIX + "layout")
    if layout is None:
        if dims[3] == 3:
            layout = "NHWC"
        elif dims[1] == 3:
            layout = "NCHW"
        else:
            raise SkinsegError(
                f"model input {inp.name!r} has shape {_shape_str(ishape)}: no axis of size 3 for RGB "
                "channels at position 1 (NCHW) or 3 (NHWC)"
            )
    h, w = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}.get(inp.type)
    if dtype is None:
        raise SkinsegError(f"model input {inp.name!r} has type {inp.type}; expected uint8, float or float16")

    oshape = [_dim(d) for d in out.shape]
    if len(oshape) == 3:
        out_layout, out_ch = "NHW", 1
    elif len(oshape) == 4:
        if oshape[3] in (1, 2) and oshape[1] not in (1, 2):
            out_layout = "NHWC"
        elif oshape[1] in (1, 2) and oshape[3] not in (1, 2):
            out_layout = "NCHW"
        else:
            out_layout = layout
        out_ch = oshape[3] if out_layout == "NHWC" else oshape[1]
    else:
        raise SkinsegError(
            f"model output {out.name!r} has shape {_shape_str(list(out.shape))}; expected a mask "
            "[N,H,W], [N,H,W,1|2] or [N,1|2,H,W]"
        )
    if out_ch not in (None, 1, 2):
        raise SkinsegError(
            f"model output {out.name!r} has {out_ch} channels (shape {_shape_str(list(out.shape))}); "
            "expected 1 (lesion probability or logit) or 2 (background/lesion softmax)"
        )
    kind = meta.get(META_PREFIX + "output")
    if kind is None:
        kind = "softmax" if out_ch == 2 else ("logits" if "logit" in out.name.lower() else "probability")
    if kind not in OUTPUT_KINDS:
        raise SkinsegError(f"model metadata {META_PREFIX}output={kind!r} is not one of {OUTPUT_KINDS}")

    input_max = 1.0
    rng = meta.get(META_PREFIX + "input_range")
    if rng:
        try:
            input_max = float(rng.split(",")[-1])
        except ValueError as exc:
            raise SkinsegError(f"model metadata {META_PREFIX}input_range={rng!r} is not 'lo,hi'") from exc
    post = {}
    if META_PREFIX + "postprocess" in meta:
        try:
            post = json.loads(meta[META_PREFIX + "postprocess"])
        except json.JSONDecodeError as exc:
            raise SkinsegError(f"model metadata {META_PREFIX}postprocess is not valid JSON") from exc
    thr = meta.get(META_PREFIX + "threshold")
    return ModelSpec(
        input_name=inp.name,
        output_name=out.name,
        layout=layout,
        output_layout=out_layout,
        input_dtype=dtype,
        input_max=input_max,
        channel_order=meta.get(META_PREFIX + "channel_order", "RGB").upper(),
        tile=(h, w) if h and w else None,
        fixed_batch=dims[0],
        output_kind=kind,
        scale=_meta_int(meta, "scale"),
        threshold=float(thr) if thr else DEFAULT_THRESHOLD,
        postprocess=post,
        metadata=meta,
    )
