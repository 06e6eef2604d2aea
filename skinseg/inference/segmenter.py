"""The engine: `Segmenter(model).predict(image)` -> probability map and mask at the image's size.

It composes the pieces, each with one home: the model adapter (tiles -> probability), the working
scale and resizes (shared/scale.py, with the methods the model records), the pure sliding window,
and post-processing. It takes typed values; parsing strings such as '512x384' is the CLI's job.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skinseg.inference import review
from skinseg.inference.adapter import ModelAdapter
from skinseg.inference.options import EngineOptions
from skinseg.inference.postprocess import PostProcess, postprocess
from skinseg.inference.spec import ModelSpec
from skinseg.inference.tiling import count_tiles, sliding_window
from skinseg.shared import scale as scaling
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import LoadedImage, load_image
from skinseg.shared.scale import FROM_MODEL


@dataclass
class Prediction:
    """One image's result, at the image's own (full, oriented) resolution."""

    working_probability: np.ndarray  # hxw float32 lesion probability at the working scale
    mask: np.ndarray  # HxW bool, after post-processing
    working_size: tuple[int, int]  # (h, w) the model saw
    tiles: int
    seconds: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (y0, y1, x0, x1) holding every lesion pixel
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage, for `skinseg bench --stages`
    resize: dict[str, str] | None = None  # how the probability goes back to full size
    components: int | None = None  # lesion components when known without counting (keep='largest': <= 1)
    confidence: float = 1.0  # how likely the mask is right, in [0, 1] (review.py); low: a person should check it

    @functools.cached_property
    def probability(self) -> np.ndarray:
        """HxW float32 lesion probability at full size (made on first use: most callers need the mask only)."""
        return scaling.probability_to_full(self.working_probability, self.mask.shape, self.resize)

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]


class Segmenter:
    """One model, loaded once, run on whole images with one `EngineOptions` value.

    Args:
        model: path to an .onnx file; None = the shipped model for this machine; 'fp32' or 'int8' = that
            shipped precision.
        provider: 'auto', 'cpu', 'cuda', 'tensorrt' or any ONNX Runtime provider name.
        options: how to run it (EngineOptions); keyword arguments build or change one for the Python API:
            `Segmenter("int8", tta=True)` is `Segmenter("int8", options=EngineOptions(tta=True))`.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, provider: str = "auto",
                 options: EngineOptions | None = None, **changes: Any) -> None:
        options = options or EngineOptions()
        self.options = options.with_(**changes) if changes else options
        o = self.options
        self.adapter = ModelAdapter(model, provider, tile=o.tile, output_kind=o.output_kind,
                                    input_max=o.input_max, threads=o.threads, graph_opt=o.graph_opt,
                                    io_binding=o.io_binding, precision=o.precision)
        self.adapter.tta = self.spec.metadata.tta if o.tta is None else o.tta
        tiling = self.spec.metadata.tiling
        self.overlap = float(tiling["overlap"]) if o.overlap is None else o.overlap
        self.sigma_scale = float(tiling["sigma_scale"])
        self.reduced_decode = o.reduced_decode
        th, tw = self.tile
        budget = 512 * 512 * (4 if self.adapter.on_gpu else 1)
        self.batch = o.batch or max(1, min(16, budget // (th * tw)))
        self.scale: int | None = self.spec.scale if o.scale == FROM_MODEL else o.scale
        self.resize = self.spec.metadata.resize
        post = {k: v for k, v in self.spec.postprocess.items() if k in PostProcess.__dataclass_fields__}
        post["threshold"] = self.spec.threshold if o.threshold is None else o.threshold
        self.post = PostProcess(**(post | o.post_overrides()))
        recorded = self.spec.metadata.review_threshold
        self.review_threshold: float = (o.review_threshold if o.review_threshold is not None else
                                        recorded if recorded is not None else review.DEFAULT_REVIEW_THRESHOLD)
        self._scratch = threading.local()
        self.keep_buffer_pixels: int | None = None  # keep a thread's full-size buffer up to this size (None: any)

    # -- what the adapter knows ----------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        return self.adapter.model_path

    @property
    def providers(self) -> list[str]:
        return self.adapter.providers

    @property
    def spec(self) -> ModelSpec:
        return self.adapter.spec

    @property
    def tile(self) -> tuple[int, int]:
        return self.adapter.tile

    @property
    def tta(self) -> bool:
        return self.adapter.tta

    @property
    def sha256(self) -> str:
        return self.adapter.sha256

    def describe(self) -> dict[str, Any]:
        """What this engine will do, for logs and run.json."""
        return {
            "model": str(self.model_path),
            "sha256": self.sha256,
            "providers": self.providers,
            "tile": f"{self.tile[0]}x{self.tile[1]}",
            "scale": self.scale or "native",
            "resize": self.resize,
            "overlap": self.overlap,
            "sigma_scale": self.sigma_scale,
            "reduced_decode": self.reduced_decode,
            "batch": self.batch,
            "tta": self.tta,
            "review_threshold": self.review_threshold,
            "postprocess": self.post.as_dict(),
            "io_binding": self.adapter.io_binding,
            "graph_opt": self.adapter.graph_opt,
            "precision": self.options.precision,
            "provider_choice": self.adapter.choice,
            "spec": self.spec.describe(),
        }

    def effective(self) -> dict[str, Any]:
        """Every engine option's value as this engine runs it (the model's own where the option is None)."""
        spec = self.spec
        values = self.options.as_dict() | {
            "tile": f"{self.tile[0]}x{self.tile[1]}", "scale": self.scale, "overlap": self.overlap, "batch": self.batch,
            "tta": self.tta, "review_threshold": self.review_threshold, "io_binding": self.adapter.io_binding,
            "output_kind": spec.output_kind,
            "input_max": spec.input_max, "graph_opt": self.adapter.graph_opt} | self.post.as_dict()
        return {name: values[name] for name in EngineOptions.names()}

    def fingerprint(self) -> dict[str, Any]:
        """What decides this engine's masks: the model file and every option declared to change pixels,
        as it runs. --resume keeps only outputs made with the same fingerprint."""
        effective = self.effective()
        return {"sha256": self.sha256, "resize": self.resize, "sigma_scale": self.sigma_scale} | {
            name: effective[name] for name in EngineOptions.pixel_fields()}

    # -- whole images --------------------------------------------------------------------------
    def load(self, source: str | os.PathLike[str] | bytes | bytearray, name: str | None = None) -> LoadedImage:
        """Read an image (a path, or the bytes of a file named `name` in messages), decoding JPEGs at
        reduced size when the working scale allows it."""
        return load_image(source, self.scale if self.reduced_decode else None, name)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return scaling.working_size(height, width, self.scale)

    def to_working(self, image: LoadedImage) -> np.ndarray:
        """The image's pixels at the working scale, resized the way the model records."""
        return scaling.to_working(image.rgb, (image.height, image.width), self.scale, self.resize)

    def check_tiles(self, height: int, width: int) -> None:
        """Refuse an image that needs more than --max-tiles tiles, before any work: that image's row (infer
        checks the first image before it starts, so a scale or overlap typo ends the run at once)."""
        tiles = self.count_tiles(height, width)
        if tiles > self.options.max_tiles:
            raise InputError(f"{width}x{height} px at working scale {self.scale or 'native'} with overlap "
                               f"{self.overlap:g} is {tiles} tiles (limit --max-tiles {self.options.max_tiles}): "
                               "lower --scale or --overlap, or raise --max-tiles")

    def count_tiles(self, height: int, width: int) -> int:
        """Tiles the engine will run for a full-resolution image of height x width."""
        return count_tiles(*self.working_size(height, width), self.tile, self.overlap)

    def predict(self, image: str | os.PathLike[str] | np.ndarray | LoadedImage, on_batch=None) -> Prediction:
        """Probability map and mask at the input's full resolution.

        `image` is a path, a LoadedImage, or an RGB uint8 HxWx3 array (HxW grey is accepted).
        """
        t0 = time.perf_counter()
        if isinstance(image, (str, os.PathLike)):
            image = self.load(image)
        elif isinstance(image, np.ndarray):
            arr = image
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
                raise SkinsegError(f"expected an RGB uint8 HxWx3 array, got {arr.dtype} {arr.shape}")
            image = LoadedImage(arr, arr.shape[0], arr.shape[1])
        h, w = image.height, image.width
        self.check_tiles(h, w)
        stages: dict[str, float] = {}
        t = time.perf_counter()
        work = self.to_working(image)
        t = _lap(stages, "to working scale", t)
        prob = sliding_window(work, self.adapter, self.tile, self.overlap, self.batch, self.sigma_scale,
                              on_batch=on_batch)
        t = _lap(stages, "model", t)
        box = scaling.lesion_box(prob, (h, w), self.post.threshold, self.resize, self.post.blur)
        full = self._full_probability(prob, (h, w)) if box else None
        t = _lap(stages, "probability to full size", t)
        mask = postprocess(full, self.post, box) if box else np.zeros((h, w), bool)
        _lap(stages, "post-processing", t)
        t = time.perf_counter()
        confidence = review.confidence(prob, self.post.threshold)
        _lap(stages, "confidence", t)
        return Prediction(prob, mask, work.shape[:2], self.count_tiles(h, w), time.perf_counter() - t0,
                          box or (0, 0, 0, 0), stages, self.resize, 1 if self.post.keep == "largest" else None,
                          confidence)

    def _full_probability(self, prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The probability at full size, resized into this thread's reused buffer: a fresh 50 MB array per
        image costs more in page faults than the resize itself. Valid until this thread's next image."""
        buf = getattr(self._scratch, "buf", None)
        if buf is None or buf.size < size[0] * size[1]:
            buf = np.empty(size[0] * size[1], np.float32)
            keep = self.keep_buffer_pixels is None or buf.size <= self.keep_buffer_pixels
            if keep:  # else a service gives this large image's buffer back after use
                self._scratch.buf = buf
        out = buf[: size[0] * size[1]].reshape(size)
        return scaling.probability_to_full(prob, size, self.resize, out=out)


def _lap(stages: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    stages[name] = now - since
    return now
