"""The model adapter: an ONNX file as a function from uint8 RGB tiles to lesion probability.

It owns the session, the model's description (spec) and the tile size, and hides layout, input
type and range, channel order, fixed batch sizes and output kinds. The engine, `skinseg bench` and
export's verification all call models through here; nothing else touches a session.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from skinseg.inference.model_files import resolve_model
from skinseg.inference.session import GPU_PROVIDERS, create_session
from skinseg.inference.spec import ModelSpec, read_spec
from skinseg.shared.errors import ModelError, SkinsegError, first_line
from skinseg.shared.files import sha256_file


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


class ModelAdapter:
    """A loaded model that maps (N, h, w, 3) uint8 RGB tiles to (N, h, w) float32 probabilities.

    Args:
        model: path to an .onnx file (see `resolve_model` for shipped names).
        provider: 'auto', 'cpu', 'cuda', 'tensorrt' or any ONNX Runtime provider name.
        tile: (h, w); default: the graph's fixed size, else the model's metadata, else 512.
        tta: average over horizontal, vertical and double flips.
        output_kind: override how the output is read: probability, logits or softmax.
        input_max: float models only: the value pixel 255 maps to (1.0 for [0,1], 255 for [0,255]).
        threads, graph_opt: ONNX Runtime intra-op threads (0 = all cores) and optimisation level ('auto':
            measured for INT8 models on the CPU EP, see tuning.py).
        io_binding: bind inputs/outputs explicitly (default: on when CUDA is active).
        precision: fp32, or bf16 through the OpenVINO EP on CPUs with bf16 units.
    With provider 'auto' and the OpenVINO EP installed (no GPU), the faster of it and the CPU EP on this
    machine is used, measured once and cached; `choice` says what was measured.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, provider: str = "auto", *,
                 tile: tuple[int, int] | int | None = None, tta: bool = False, output_kind: str | None = None,
                 input_max: float | None = None, threads: int = 0, graph_opt: str = "all",
                 io_binding: bool | None = None, precision: str = "fp32") -> None:
        self.model_path = resolve_model(model, provider)
        self.precision, self.threads = precision, threads
        self.graph_opt = "all" if graph_opt == "auto" else graph_opt
        self.session, self.providers = create_session(self.model_path, provider, threads, self.graph_opt, precision)
        self.spec: ModelSpec = read_spec(self.session, str(self.model_path))
        self.choice: str | None = None  # what auto measured, in words
        if output_kind:  # checked by EngineOptions
            self.spec.output_kind = output_kind
        if input_max:
            self.spec.input_max = float(input_max)
        self.tile = self._fit_tile((tile, tile) if isinstance(tile, int) else tile)
        self.tta = tta
        self.io_binding = "CUDAExecutionProvider" in self.providers if io_binding is None else io_binding
        self._sha256: str | None = None
        if not self.on_gpu:
            self._choose(provider, graph_opt)

    def _choose(self, provider: str, graph_opt: str) -> None:
        """Measure the CPU-side candidates that `auto` leaves open and keep the fastest (cached)."""
        import onnxruntime as ort

        from skinseg.inference import tuning

        candidates: dict[str, tuple[str, str]] = {}
        int8 = self.spec.metadata.provenance.get("precision") == "int8"
        if provider in ("auto", "cpu"):
            for level in (("extended", "all") if graph_opt == "auto" and int8 else (self.graph_opt,)):
                candidates[f"CPUExecutionProvider, graph {level}"] = ("cpu", level)
        if provider == "auto" and "OpenVINOExecutionProvider" in ort.get_available_providers() and \
                self.precision == "fp32":
            candidates["OpenVINOExecutionProvider"] = ("openvino", "all")
        if len(candidates) < 2:
            return
        sessions = {("cpu", self.graph_opt): (self.session, self.providers)}  # the one already open

        def timing(which: tuple[str, str]):
            def measure() -> float:
                if which not in sessions:
                    sessions[which] = create_session(self.model_path, which[0], self.threads, which[1], self.precision)
                self.session, self.providers = sessions[which]
                return self.latency_ms(runs=10)
            return measure

        key = {"model": self.sha256, "threads": self.threads, "tile": list(self.tile), "precision": self.precision}
        label, ms, cached = tuning.choose(key, {k: timing(v) for k, v in candidates.items()})
        which = candidates[label]
        if which not in sessions:
            sessions[which] = create_session(self.model_path, which[0], self.threads, which[1], self.precision)
        self.session, self.providers = sessions[which]
        self.graph_opt = which[1]
        figures = ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
        when = "measured earlier on this machine" if cached else "measured now"
        self.choice = f"{label} ({when}: {figures} per tile)"

    def _fit_tile(self, asked: tuple[int, int] | None) -> tuple[int, int]:
        fixed = self.spec.tile
        if fixed and asked and tuple(asked) != fixed:
            raise SkinsegError(f"tile {asked[0]}x{asked[1]} does not fit {self.model_path.name}: its input is "
                               f"fixed at {fixed[0]}x{fixed[1]} (HxW); use that tile or none")
        return tuple(asked) if asked else self.spec.default_tile  # type: ignore[return-value]

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] in GPU_PROVIDERS

    def latency_ms(self, runs: int = 20, batch: int = 1) -> float:
        """Median milliseconds per tile of a session run on `batch` random tiles, after warm-up."""
        x = self.to_model_input(np.random.default_rng(0).integers(0, 256, (batch, *self.tile, 3), dtype=np.uint8))
        for _ in range(3):
            self.run(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self.run(x)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times) / batch

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.model_path)
        return self._sha256

    # -- one session call ------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw model output for a prepared input tensor; pads to the model's fixed batch size."""
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
        try:
            if self.io_binding:
                binding = self.session.io_binding()
                binding.bind_cpu_input(self.spec.input_name, x)
                binding.bind_output(self.spec.output_name)
                self.session.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()[0]
            return self.session.run([self.spec.output_name], {self.spec.input_name: x})[0]
        except Exception as exc:  # onnxruntime's own error types: the model fails on any input of this shape
            first = first_line(exc)
            raise ModelError(f"{self.model_path}: the model failed on a {list(x.shape)} input ({first}); "
                             "check its tile size and metadata") from exc

    # -- tensors in and out ----------------------------------------------------------------------
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
            raise ModelError(
                f"{self.model_path}: output {self.spec.output_name!r} has shape {list(out.shape)} for a batch of "
                f"{n} {th}x{tw} tiles; expected a mask of the tile's size"
            )
        if not np.isfinite(chans).all():
            raise ModelError(f"{self.model_path}: the model returned NaN or infinite values; it is broken "
                             "(re-export it, or check its input range)")
        kind = self.spec.output_kind
        if kind == "softmax" or chans.shape[1] == 2:
            if kind == "probability":  # two channels of probabilities
                return chans[:, 1].astype(np.float32)
            return _sigmoid(chans[:, 1].astype(np.float32) - chans[:, 0].astype(np.float32))
        if kind == "logits":
            return _sigmoid(chans[:, 0].astype(np.float32))
        return np.clip(chans[:, 0].astype(np.float32), 0.0, 1.0)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 RGB tiles -> (N, h, w) probabilities, flip-averaged with TTA."""
        n = tiles.shape[0]
        prob = self.to_probability(self.run(self.to_model_input(tiles)), n)
        if not self.tta:
            return prob
        for axes in ((2,), (1,), (1, 2)):
            p = self.to_probability(self.run(self.to_model_input(np.flip(tiles, axis=axes))), n)
            prob += np.flip(p, axis=axes)
        return prob / 4.0
