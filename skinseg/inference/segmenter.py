"""The engine: `Segmenter(model).predict(image)` -> probability map and mask at the image's size.

It composes the pieces, each with one home: the model adapter (tiles -> probability), the working
scale and resizes (shared/scale.py, with the methods the model records), the pure sliding window,
and post-processing. It takes typed values; parsing strings such as '512x384' is the CLI's job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from skinseg.inference.adapter import ModelAdapter
from skinseg.inference.postprocess import PostProcess, postprocess
from skinseg.inference.spec import ModelSpec
from skinseg.inference.tiling import count_tiles, sliding_window
from skinseg.shared import scale as scaling
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import LoadedImage, load_image

FROM_MODEL = "model"  # scale: use the working scale the model records


@dataclass
class Prediction:
    """One image's result, at the image's own (full, oriented) resolution."""

    probability: np.ndarray  # HxW float32 lesion probability
    mask: np.ndarray  # HxW bool, after post-processing
    working_size: tuple[int, int]  # (h, w) the model saw
    tiles: int
    seconds: float

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]


class Segmenter:
    """A model adapter plus the options to run it on whole images.

    Args:
        model: path to an .onnx file; None = the shipped model for this machine; 'fp32' or 'int8' = that
            shipped precision.
        provider: 'auto', 'cpu', 'cuda', 'tensorrt' or any ONNX Runtime provider name.
        tile: tile size N or (h, w); defaults to the model's fixed input size, else its metadata, else 512.
        scale: working scale as the long side in pixels, None for native resolution, or "model" (default)
            for the model's own.
        overlap: fraction of tile overlap in [0, 1); default: the model's (`skinseg.tiling`), else 0.5.
        batch: tiles per session run; 0 = auto: up to 512x512 pixels per run on the CPU (batching
            big tiles there only costs memory: 1.4 GB at 4x512x512 vs 0.4 GB at 1, same speed),
            four times that on a GPU, at most 16 tiles.
        tta: average predictions over horizontal/vertical flips (4x the work).
        threshold: overrides the model's threshold (default 0.5).
        post: post-processing options; fields not given come from the model metadata.
        output_kind, input_max, threads, graph_opt, io_binding: see ModelAdapter.
        reduced_decode: decode JPEGs at 1/2, 1/4 or 1/8 size when the working scale allows (faster);
            False decodes every image at full size, the contract's reference path.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        provider: str = "auto",
        *,
        tile: int | tuple[int, int] | None = None,
        scale: int | None | Literal["model"] = FROM_MODEL,
        overlap: float | None = None,
        batch: int = 0,
        tta: bool = False,
        threshold: float | None = None,
        post: dict[str, Any] | None = None,
        output_kind: str | None = None,
        input_max: float | None = None,
        threads: int = 0,
        graph_opt: str = "all",
        io_binding: bool | None = None,
        reduced_decode: bool = True,
    ) -> None:
        if overlap is not None and not 0 <= overlap < 1:
            raise SkinsegError(f"overlap {overlap}: must be at least 0 and below 1")
        if batch < 0:
            raise SkinsegError(f"batch {batch}: must be at least 1 (or 0 for auto)")
        self.adapter = ModelAdapter(model, provider, tile=tile, tta=tta, output_kind=output_kind,
                                    input_max=input_max, threads=threads, graph_opt=graph_opt,
                                    io_binding=io_binding)
        tiling = self.spec.metadata.tiling
        self.overlap = float(tiling["overlap"]) if overlap is None else overlap
        self.sigma_scale = float(tiling["sigma_scale"])
        self.reduced_decode = reduced_decode
        th, tw = self.tile
        budget = 512 * 512 * (4 if self.adapter.on_gpu else 1)
        self.batch = batch or max(1, min(16, budget // (th * tw)))
        self.scale: int | None = self.spec.scale if scale == FROM_MODEL else scaling.check_scale(scale)
        self.resize = self.spec.metadata.resize
        opts = {k: v for k, v in self.spec.postprocess.items() if k in PostProcess.__dataclass_fields__}
        opts["threshold"] = self.spec.threshold if threshold is None else threshold
        opts.update({k: v for k, v in (post or {}).items() if v is not None})
        self.post = PostProcess(**opts)

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
            "postprocess": self.post.as_dict(),
            "io_binding": self.adapter.io_binding,
            "spec": self.spec.describe(),
        }

    # -- whole images --------------------------------------------------------------------------
    def load(self, path: str | os.PathLike[str]) -> LoadedImage:
        """Read an image, decoding JPEGs at reduced size when the working scale allows it."""
        return load_image(path, self.scale if self.reduced_decode else None)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return scaling.working_size(height, width, self.scale)

    def to_working(self, image: LoadedImage) -> np.ndarray:
        """The image's pixels at the working scale, resized the way the model records."""
        return scaling.to_working(image.rgb, (image.height, image.width), self.scale, self.resize)

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
        work = self.to_working(image)
        prob = sliding_window(work, self.adapter, self.tile, self.overlap, self.batch, self.sigma_scale,
                              on_batch=on_batch)
        prob = scaling.probability_to_full(prob, (h, w), self.resize)
        mask = postprocess(prob, self.post)
        return Prediction(prob, mask, work.shape[:2], self.count_tiles(h, w), time.perf_counter() - t0)
