"""The engine: `Segmenter(model).predict(image)` -> probability map and mask at the image's size."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skinseg.inference.postprocess import PostProcess, postprocess
from skinseg.inference.session import create_session
from skinseg.inference.spec import DEFAULT_TILE, META_PREFIX, ModelSpec, read_spec
from skinseg.inference.tiling import sliding_window, tile_grid
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import LoadedImage, load_image


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


def parse_tile(value: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """'512' or '512x384' (height x width) or an int/tuple -> (h, w)."""
    if value is None or value == "":
        return None
    if isinstance(value, tuple):
        return value
    if isinstance(value, int):
        return (value, value)
    parts = str(value).lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError as exc:
        raise SkinsegError(f"--tile {value!r}: expected N or HxW in pixels, e.g. 512 or 384x512") from exc
    if len(dims) not in (1, 2) or min(dims) < 8:
        raise SkinsegError(f"--tile {value!r}: expected N or HxW, each at least 8 pixels")
    return (dims[0], dims[-1])


def parse_scale(value: str | int | None) -> int | None | str:
    """'native' -> None, '1024' -> 1024, None -> 'model' (use the model's own)."""
    if value is None or value == "":
        return "model"
    if isinstance(value, int):
        return value
    if str(value).lower() == "native":
        return None
    try:
        px = int(value)
    except ValueError as exc:
        raise SkinsegError(f"--scale {value!r}: expected a long side in pixels (e.g. 1024) or 'native'") from exc
    if px < 8:
        raise SkinsegError(f"--scale {value!r}: the long side must be at least 8 pixels")
    return px


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


class Segmenter:
    """A loaded model plus the options to run it on whole images.

    Args:
        model: path to an .onnx file; None = the shipped model for this machine; 'fp32' or 'int8' = that
            shipped precision.
        provider: 'auto', 'cpu', 'cuda', 'tensorrt' or any ONNX Runtime provider name.
        tile: tile size N or (h, w); defaults to the model's fixed input size, else 512.
        scale: working scale as the long side in pixels, 'native' for none; default: the model's.
        overlap: fraction of tile overlap in [0, 1).
        batch: tiles per session run; 0 = auto: up to 512x512 pixels per run on the CPU (batching
            big tiles there only costs memory: 1.4 GB at 4x512x512 vs 0.4 GB at 1, same speed),
            four times that on a GPU, at most 16 tiles.
        tta: average predictions over horizontal/vertical flips (4x the work).
        threshold: overrides the model's threshold (default 0.5).
        post: post-processing options; fields not given come from the model metadata.
        output_kind: override how the output is read: probability, logits or softmax.
        input_max: float models only: value pixel 255 maps to (1.0 for [0,1] input, 255 for [0,255]).
        threads: intra-op threads (0 = all cores).
        graph_opt: ONNX Runtime graph optimisation level.
        io_binding: bind inputs/outputs explicitly (default: on when CUDA is active).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        provider: str = "auto",
        *,
        tile: str | int | tuple[int, int] | None = None,
        scale: str | int | None = None,
        overlap: float = 0.5,
        batch: int = 0,
        tta: bool = False,
        threshold: float | None = None,
        post: dict[str, Any] | None = None,
        output_kind: str | None = None,
        input_max: float | None = None,
        threads: int = 0,
        graph_opt: str = "all",
        io_binding: bool | None = None,
    ) -> None:
        if model is None:
            from skinseg.models import default_model

            model = default_model(provider)
        elif str(model).lower() in ("fp32", "int8") and not Path(model).exists():
            from skinseg.models import shipped_models

            picked = shipped_models().get(str(model).lower())
            if picked is None:
                raise SkinsegError(f"--model {model}: no shipped {model} model in this install")
            model = picked
        self.model_path = Path(model)
        self.session, self.providers = create_session(self.model_path, provider, threads, graph_opt)
        self.spec: ModelSpec = read_spec(self.session)
        if output_kind:
            if output_kind not in ("probability", "logits", "softmax"):
                raise SkinsegError(f"output kind {output_kind!r}: choose probability, logits or softmax")
            self.spec.output_kind = output_kind
        if input_max:
            self.spec.input_max = float(input_max)
        if not 0 <= overlap < 1:
            raise SkinsegError(f"--overlap {overlap}: must be at least 0 and below 1")
        if batch < 0:
            raise SkinsegError(f"--batch {batch}: must be at least 1 (or 0 for auto)")
        self.overlap, self.tta = overlap, tta
        self.tile = self._resolve_tile(parse_tile(tile))
        gpu = self.providers[0] != "CPUExecutionProvider"
        budget = 512 * 512 * (4 if gpu else 1)
        self.batch = batch or max(1, min(16, budget // (self.tile[0] * self.tile[1])))
        resolved = parse_scale(scale)
        self.scale: int | None = self.spec.scale if resolved == "model" else resolved  # type: ignore[assignment]
        opts = {k: v for k, v in self.spec.postprocess.items() if k in PostProcess.__dataclass_fields__}
        opts["threshold"] = self.spec.threshold if threshold is None else threshold
        opts.update({k: v for k, v in (post or {}).items() if v is not None})
        self.post = PostProcess(**opts)
        self.io_binding = "CUDAExecutionProvider" in self.providers if io_binding is None else io_binding
        self._sha256: str | None = None

    # -- configuration -------------------------------------------------------------------------
    def _resolve_tile(self, asked: tuple[int, int] | None) -> tuple[int, int]:
        fixed = self.spec.tile
        if fixed:
            if asked and asked != fixed:
                raise SkinsegError(
                    f"--tile {asked[0]}x{asked[1]} does not fit this model: its input is fixed at "
                    f"{fixed[0]}x{fixed[1]} (HxW); leave --tile out"
                )
            return fixed
        if asked:
            return asked
        meta = self.spec.metadata
        if META_PREFIX + "tile_height" in meta:
            return int(meta[META_PREFIX + "tile_height"]), int(meta[META_PREFIX + "tile_width"])
        return (DEFAULT_TILE, DEFAULT_TILE)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.model_path)
        return self._sha256

    def describe(self) -> dict[str, Any]:
        """What this engine will do, for logs and run.json."""
        return {
            "model": str(self.model_path),
            "sha256": self.sha256,
            "providers": self.providers,
            "tile": f"{self.tile[0]}x{self.tile[1]}",
            "scale": self.scale or "native",
            "overlap": self.overlap,
            "batch": self.batch,
            "tta": self.tta,
            "postprocess": self.post.as_dict(),
            "io_binding": self.io_binding,
            "spec": self.spec.describe(),
        }

    # -- model calls ---------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        """One session call; pads to the model's fixed batch size when it has one."""
        fixed = self.spec.fixed_batch
        if fixed and x.shape[0] != fixed:
            outs = []
            for i in range(0, x.shape[0], fixed):
                part = x[i : i + fixed]
                n = part.shape[0]
                if n < fixed:
                    part = np.concatenate([part, np.repeat(part[-1:], fixed - n, axis=0)])
                outs.append(self._run_once(part)[:n])
            return np.concatenate(outs)
        return self._run_once(x)

    def _run_once(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        if self.io_binding:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.spec.input_name, x)
            binding.bind_output(self.spec.output_name)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([self.spec.output_name], {self.spec.input_name: x})[0]

    def to_model_input(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) RGB uint8 tiles -> the model's input tensor (dtype, range, order, layout)."""
        x = tiles[..., ::-1] if self.spec.channel_order == "BGR" else tiles
        if self.spec.input_dtype != np.uint8:
            x = x.astype(np.float32)
            x *= np.float32(self.spec.input_max / 255.0)
            x = x.astype(self.spec.input_dtype, copy=False)
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return x

    def to_probability(self, out: np.ndarray, n: int) -> np.ndarray:
        """Model output -> (N, h, w) float32 lesion probability."""
        out = np.asarray(out)
        th, tw = self.tile
        if self.spec.output_layout == "NHW":
            chans = out[:, None]
        elif self.spec.output_layout == "NHWC":
            chans = np.moveaxis(out, 3, 1) if out.ndim == 4 else out[:, None]
        else:
            chans = out
        if chans.ndim != 4 or chans.shape[0] != n or chans.shape[2:] != (th, tw):
            raise SkinsegError(
                f"model output {self.spec.output_name!r} has shape {list(out.shape)} for a batch of {n} "
                f"{th}x{tw} tiles; expected a mask of the tile's size"
            )
        kind = self.spec.output_kind
        if kind == "softmax" or chans.shape[1] == 2:
            if kind == "probability":  # two channels of probabilities
                return chans[:, 1].astype(np.float32)
            return _sigmoid(chans[:, 1].astype(np.float32) - chans[:, 0].astype(np.float32))
        if kind == "logits":
            return _sigmoid(chans[:, 0].astype(np.float32))
        return np.clip(chans[:, 0].astype(np.float32), 0.0, 1.0)

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 RGB tiles -> (N, h, w) probabilities, with flip TTA if enabled."""
        n = tiles.shape[0]
        prob = self.to_probability(self._run(self.to_model_input(tiles)), n)
        if not self.tta:
            return prob
        for axes in ((2,), (1,), (1, 2)):
            flipped = np.flip(tiles, axis=axes)
            p = self.to_probability(self._run(self.to_model_input(flipped)), n)
            prob += np.flip(p, axis=tuple(a for a in axes))
        return prob / 4.0

    # -- whole images --------------------------------------------------------------------------
    def load(self, path: str | os.PathLike[str]) -> LoadedImage:
        """Read an image, decoding JPEGs at reduced size when the working scale allows it."""
        return load_image(path, self.scale)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.scale:
            return height, width
        s = self.scale / max(height, width)
        return max(1, round(height * s)), max(1, round(width * s))

    def to_working(self, image: LoadedImage) -> np.ndarray:
        """The image's pixels at the working scale (area interpolation when shrinking)."""
        wh, ww = self.working_size(image.height, image.width)
        work = image.rgb
        if work.shape[:2] != (wh, ww):
            smaller = wh * ww < work.shape[0] * work.shape[1]
            work = cv2.resize(work, (ww, wh), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)
        return work

    def count_tiles(self, height: int, width: int) -> int:
        """Tiles the engine will run for a full-resolution image of height x width."""
        wh, ww = self.working_size(height, width)
        th, tw = self.tile
        return len(tile_grid(max(wh, th), max(ww, tw), th, tw, self.overlap))

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
        wh, ww = self.working_size(h, w)
        work = self.to_working(image)
        prob = sliding_window(work, self.predict_tiles, self.tile, self.overlap, self.batch, on_batch=on_batch)
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = postprocess(prob, self.post)
        return Prediction(prob, mask, (wh, ww), self.count_tiles(h, w), time.perf_counter() - t0)
