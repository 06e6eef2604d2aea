"""What a model expects and returns, read from the graph and its metadata_props.

Models written by `skinseg export` describe themselves (keys below, prefixed `skinseg.`); plain
models from elsewhere are understood from their shapes plus documented defaults, and CLI flags
override both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import OUTPUT_KINDS, MetadataError, ModelMetadata

DEFAULT_TILE = 512
DEFAULT_THRESHOLD = 0.5
DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


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
    metadata: ModelMetadata = field(default_factory=ModelMetadata)

    @property
    def self_describing(self) -> bool:
        return self.metadata.self_describing

    @property
    def default_tile(self) -> tuple[int, int]:
        """The graph's fixed size, else the tile the model was trained on, else DEFAULT_TILE."""
        return self.tile or self.metadata.tile or (DEFAULT_TILE, DEFAULT_TILE)

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


def read_spec(session: Any, where: str = "model") -> ModelSpec:
    """Build a ModelSpec from an onnxruntime.InferenceSession (graph shapes + metadata_props)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    meta = ModelMetadata.from_props(dict(session.get_modelmeta().custom_metadata_map or {}), where)
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
    layout = meta.layout
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
    channels = dims[3] if layout == "NHWC" else dims[1]
    if channels not in (None, 3):
        raise MetadataError(f"{where}: metadata says layout {layout} but input {inp.name!r} has shape "
                            f"{_shape_str(ishape)} (no 3 channels there)")
    h, w = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    dtype = DTYPES.get(inp.type)
    if dtype is None:
        raise SkinsegError(f"model input {inp.name!r} has type {inp.type}; expected uint8, float or float16")
    if meta.input_dtype and np.dtype(meta.input_dtype) != np.dtype(dtype):
        raise MetadataError(f"{where}: metadata says input_dtype {meta.input_dtype} but input {inp.name!r} is "
                            f"{inp.type}")
    if meta.tile and h and w and meta.tile != (h, w):
        raise MetadataError(f"{where}: metadata tile {meta.tile[0]}x{meta.tile[1]} contradicts the graph's fixed "
                            f"input {h}x{w}")

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
    kind = meta.output
    if kind is None:
        kind = "softmax" if out_ch == 2 else ("logits" if "logit" in out.name.lower() else "probability")
    assert kind in OUTPUT_KINDS
    return ModelSpec(
        input_name=inp.name,
        output_name=out.name,
        layout=layout,
        output_layout=out_layout,
        input_dtype=dtype,
        input_max=meta.input_range[1] if meta.input_range else 1.0,
        channel_order=meta.channel_order,
        tile=(h, w) if h and w else None,
        fixed_batch=dims[0],
        output_kind=kind,
        scale=meta.scale,
        threshold=meta.threshold if meta.threshold is not None else DEFAULT_THRESHOLD,
        postprocess=meta.postprocess,
        metadata=meta,
    )
