"""`skinseg export`: a verified, self-describing ONNX model (FP32), with optional FP16 and INT8 variants.

An `Exporter` is a list of steps, each one method run through `step` (timing, size, one log line):
load the .keras file (safe mode) -> convert with tf2onnx (uint8 NHWC input, preprocessing inside
the graph, dynamic batch) -> check -> optional simplification -> parity against Keras (max |diff|
<= 1e-4 or nothing is published) -> validation Jaccard through the engine -> FP16 / INT8 variants
-> publish -> a summary table. Every file is written under a hidden temporary name beside its final
one and renamed only after verification, so a killed export never leaves an unverified model where a
verified one was.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import __version__, ui
from skinseg.inference.int8 import Gate, calibration_tiles, check_limit, check_target, gate, quantize_file
from skinseg.inference.parity import Parity, compare
from skinseg.inference.review import MAX_FLAGGED
from skinseg.shared import files
from skinseg.shared.dataset import collect_images, config_split, locate_split, split_pairs
from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import DEFAULT_POSTPROCESS, ModelMetadata
from skinseg.shared.runfolder import RunFolder
from skinseg.shared.scale import DEFAULT_RESIZE

TTA_GAIN = 0.3  # validation mean-Jaccard points flip TTA must gain for the model to ask for it
MIN_OPSET, MAX_OPSET = 13, 21


@dataclass
class Source:
    """What is exported: the .keras file and, when it lies in a run folder, that run's records."""

    keras_path: Path
    run: RunFolder | None
    config: Any = None  # skinseg.shared.config.Config
    data: dict[str, Any] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)  # Keras validation figures of the best epoch


def find_source(path: Path) -> Source:
    """A run folder (uses best.keras) or a .keras file (its folder's config.ini is used if present)."""
    path = Path(path)
    if path.is_dir():
        keras_path = RunFolder(path).best
        if not keras_path.is_file():
            raise SkinsegError(f"{path}: no best.keras in this folder; give a run folder of skinseg train "
                               "or a .keras file")
    elif path.is_file():
        keras_path = path
        if path.suffix != ".keras":
            raise SkinsegError(f"{path}: not a .keras file; export takes a Keras 3 model saved by skinseg train")
    else:
        raise SkinsegError(f"{path}: no such file or folder")
    run = RunFolder.of(keras_path)
    src = Source(keras_path, run)
    if run:
        from skinseg.shared.config import load_config

        src.config = load_config(run.config)
        src.data = run.read_json(run.data, {})
        src.best = {k: float(v) for k, v in run.best_row().items() if k.startswith("val_") and v not in ("", None)}
    return src


def load_keras(path: Path) -> Any:
    """Load in safe mode (no arbitrary code) with skinseg's custom objects registered."""
    import zipfile

    from skinseg.training.tf_env import import_tf

    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tf()
    import keras

    import skinseg.training.losses  # noqa: F401 - registers custom objects
    import skinseg.training.model  # noqa: F401

    if not zipfile.is_zipfile(path):
        raise SkinsegError(f"{path}: not a Keras 3 .keras archive (corrupt, truncated or another format)")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise SkinsegError(f"{path}: cannot load as a skinseg Keras model ({str(exc).splitlines()[0][:200]})") from exc


def float32_copy(model: Any, cfg: Any) -> Any:
    """A float32 twin rebuilt from the run's config with the same weights.

    Rebuilding also gives checkpoints saved by older skinseg versions today's graph (the classifier
    now runs before the last upsampling); the weights are the same list in the same order.
    """
    import keras

    if cfg is None:
        return model
    from skinseg.training.model import model_from_config

    keras.mixed_precision.set_global_policy("float32")
    twin = model_from_config(cfg)
    twin.set_weights(model.get_weights())
    return twin


def min_ir_version(opset: int) -> int:
    """The lowest IR version that allows `opset`, so older ONNX Runtime releases still load the file."""
    import onnx

    for _, ir, op, *_ in onnx.helper.VERSION_TABLE:
        if op >= opset:
            return ir
    return onnx.IR_VERSION


def convert(model: Any, tile: tuple[int, int], opset: int) -> Any:
    """uint8 NHWC tiles with a dynamic batch -> probability: tf2onnx on TensorFlow, Keras' own ONNX export
    (torch.onnx) on the PyTorch backend, for a GPU machine without TensorFlow."""
    import keras

    if keras.backend.backend() == "torch":
        return convert_torch(model, tile, opset)
    return convert_tf(model, tile, opset)


def convert_torch(model: Any, tile: tuple[int, int], opset: int) -> Any:
    import tempfile

    import keras
    import onnx

    th, tw = tile
    image = keras.Input((th, tw, 3), dtype="uint8", name="image")
    wrapper = keras.Model(image, model(keras.ops.cast(image, "float32")), name="skinseg")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the tracer's notes on shapes it fixes: the tile is fixed, the
            warnings.simplefilter("ignore")  # batch stays dynamic (export's parity check runs batches)
            wrapper.export(str(path), format="onnx", verbose=False, opset_version=opset,
                           input_signature=[keras.InputSpec(shape=(None, th, tw, 3), dtype="uint8")])
        onnx_model = onnx.load(str(path))
    _name_as_contract(onnx_model.graph, th, tw)
    onnx_model.ir_version = min(onnx_model.ir_version, min_ir_version(max(opset, _opset(onnx_model))))
    return onnx_model


def _name_as_contract(graph: Any, th: int, tw: int) -> None:
    """torch.onnx names the graph's ends `input_0` and after its last node: the contract (and clients
    that feed by name) want `image` [N, H, W, 3] and `probability` [N, H, W, 1], as tf2onnx writes them."""
    renames = {graph.input[0].name: "image", graph.output[0].name: "probability"}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)
    for end, dims in ((graph.input[0], ("N", th, tw, 3)), (graph.output[0], ("N", th, tw, 1))):
        end.name = renames[end.name]
        for dim, value in zip(end.type.tensor_type.shape.dim, dims, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def convert_tf(model: Any, tile: tuple[int, int], opset: int) -> Any:
    """tf2onnx from a tf.function taking uint8 NHWC tiles with a dynamic batch."""
    import tensorflow as tf
    import tf2onnx

    th, tw = tile

    @tf.function(input_signature=[tf.TensorSpec([None, th, tw, 3], tf.uint8, name="image")])
    def infer(image):
        return {"probability": model(tf.cast(image, tf.float32), training=False)}

    onnx_model, _ = tf2onnx.convert.from_function(infer, input_signature=infer.input_signature, opset=opset)
    onnx_model.ir_version = min(onnx_model.ir_version, min_ir_version(opset))
    return onnx_model


def set_metadata(model: Any, meta: ModelMetadata) -> None:
    del model.metadata_props[:]
    for k, v in meta.to_props().items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "skinseg"
    model.producer_version = __version__
    model.doc_string = "skinseg lesion segmentation: uint8 RGB NHWC tiles in, lesion probability out"


# -- data for verification ----------------------------------------------------------------------------
def validation_pairs(src: Source, valid: Path | None) -> list[tuple[Path, Path]]:
    """--valid DIR, else the run config's [eval] split, by the one rule for where masks live."""
    if valid is not None:
        dirs = locate_split(Path(valid))
    elif src.config is not None:
        dirs = config_split(src.config, "eval")
        if dirs is None:
            return []
    else:
        return []
    return split_pairs(dirs.images, dirs.masks).pairs


def engine_masks(model_path: Path, images: list[Path], tta: bool | None = None) -> tuple[list[np.ndarray], list[float]]:
    """Masks and their confidences through the engine (the code path infer and eval use) on the CPU;
    `tta` None = as the file records."""
    from skinseg.inference.segmenter import Segmenter

    seg = Segmenter(model_path, "cpu", tta=tta)
    preds = [seg.predict(p) for p in images]
    return [p.mask for p in preds], [p.confidence for p in preds]


def to_fp16(fp32_model: Any) -> Any:
    """FP16 weights and compute, I/O kept uint8 in / float32 out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(fp32_model, keep_io_types=True)


def variant_paths(output: Path) -> tuple[Path, Path, Path]:
    """(fp32, fp16, int8) paths: FP32 at `output` unless that names a variant (model-int8.onnx -> model.onnx);
    variants beside it with the -fp32 suffix, if any, replaced (skinseg-fp32 -> skinseg-int8)."""
    base = output.stem
    for suffix in ("-int8", "-fp16", "-fp32"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    d = output.parent
    fp32 = output if not output.stem.endswith(("-int8", "-fp16")) else d / f"{base}.onnx"
    return fp32, d / f"{base}-fp16.onnx", d / f"{base}-int8.onnx"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def step(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run one export step: time it, log one line (with the size of the file it returns), and turn a
    library failure into an error that names the step."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(self: Exporter, *args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                result = fn(self, *args, **kwargs)
            except SkinsegError:
                raise
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise SkinsegError(f"export step '{label}' failed: {type(exc).__name__}: {first}") from exc
            size = f"  {_mb(result):.2f} MB" if isinstance(result, Path) and result.is_file() else ""
            note = f" ({self.note})" if self.note else ""
            self.note = ""
            self.log(f"[green]✓[/] {label + note:<44} {time.perf_counter() - t:6.1f} s{size}")
            return result

        return run

    return wrap


class Exporter:
    """Export one Keras model; `run()` performs the steps in order and returns one row per file."""

    def __init__(self, source: Path, opset: int = 17, output: Path | None = None, fp16: bool = False,
                 int8: bool = False, calibration: Path | None = None, valid: Path | None = None,
                 max_drop: float = 0.5, force: bool = False, simplify: bool = False,
                 calibration_tiles: int = 64, quiet: bool = False, target: str = "cpu",
                 max_disagreement: float = 3.0, max_flagged: float = MAX_FLAGGED) -> None:
        check_target(target)
        if not 0 <= max_flagged <= 1:
            raise SkinsegError(f"--max-flagged {max_flagged}: must be a share from 0 to 1 (0.15 = 15 % of images)")
        self.max_flagged = max_flagged
        self.review_thresholds: dict[str, float] = {}  # precision -> chosen on the validation split
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise SkinsegError(f"--opset {opset}: supported opsets are {MIN_OPSET} to {MAX_OPSET} (17 recommended)")
        self.src = find_source(source)
        self.opset, self.fp16, self.int8, self.simplify = opset, fp16, int8, simplify
        self.calibration, self.valid, self.max_drop, self.force = calibration, valid, max_drop, force
        self.max_disagreement = check_limit("--max-disagreement", max_disagreement)
        check_limit("--max-drop", max_drop)
        self.calibration_tiles, self.target = calibration_tiles, target
        self.extra: dict[str, str] = {}
        out = Path(output) if output else RunFolder(self.src.keras_path.parent).model
        if out.suffix.lower() != ".onnx":
            raise SkinsegError(f"--output {out}: expected an .onnx file name (e.g. {out.with_suffix('.onnx')})")
        self.paths = dict(zip(("fp32", "fp16", "int8"), variant_paths(out), strict=True))
        inputs = [self.src.keras_path] + ([self.src.config.path] if self.src.config is not None else [])
        for p in self.paths.values():  # an output that is an input would replace what it is made from
            if any(p.resolve() == Path(i).resolve() for i in inputs):
                raise SkinsegError(f"--output {p} is an input of this export; choose another file name")
        self.log: Callable[[str], None] = (lambda msg: None) if quiet else ui.info
        self.quiet = quiet
        self.note = ""
        cfg = self.src.config
        self.meta = ModelMetadata(
            layout="NHWC", channel_order="RGB", input_dtype="uint8", input_range=(0, 255), output="probability",
            scale=cfg.model.working_scale if cfg else None,
            threshold=round(cfg.mask.threshold, 4) if cfg else 0.5,
            postprocess=DEFAULT_POSTPROCESS | {"blur": cfg.blur_sigma if cfg else 0.0},
            resize=cfg.resize if cfg else dict(DEFAULT_RESIZE),
        )
        self.metrics: dict[str, Any] = {"keras_validation": self.src.best}
        self.pending: dict[str, Path] = {}  # precision -> verified file under its temporary name
        self.rows: list[dict[str, Any]] = []

    def staging(self, precision: str) -> Path:
        final = self.paths[precision]
        return final.with_name(f".{final.stem}.{os.getpid()}.export.onnx")

    # -- the steps -------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        folder = files.ensure_writable_dir(self.paths["fp32"].parent)
        for stale in folder.glob(".*.export.onnx"):  # left by a killed export: never a verified model
            with contextlib.suppress(ValueError, OSError):
                pid = int(stale.name.split(".")[-3])
                if not _alive(pid):
                    stale.unlink()
        try:
            self.load()
            self.to_onnx()
            self.verify_parity()
            if self.simplify:
                self.simplify_graph()
            self.validate()
            if self.fp16:
                self.make_fp16()
            if self.int8:
                self.make_int8()
            self.publish()
        finally:
            for tmp in self.pending.values():
                tmp.unlink(missing_ok=True)
        if not self.quiet:
            self.table()
        else:  # -q keeps the one line that says where the results are
            ui.out.print(f"wrote {', '.join(str(r['file']) for r in self.rows)}", soft_wrap=True)
        return self.rows

    @step("load")
    def load(self) -> Path:
        model = load_keras(self.src.keras_path)
        shape = model.input_shape
        if len(shape) != 4 or shape[-1] != 3 or not shape[1] or not shape[2]:
            raise SkinsegError(f"{self.src.keras_path}: model input {shape} is not a fixed-size RGB image (N, H, W, 3)")
        self.tile = (int(shape[1]), int(shape[2]))
        self.meta.tile = self.tile
        self.model = float32_copy(model, self.src.config)
        self.note = f"{self.src.keras_path.name}, {self.tile[0]}x{self.tile[1]}"
        return self.src.keras_path

    def provenance(self, precision: str) -> ModelMetadata:
        import keras
        import onnx

        backend = keras.backend.backend()
        tools = {"keras": keras.__version__, "keras_backend": backend, "onnx": onnx.__version__}
        if backend == "tensorflow":
            import tensorflow as tf
            import tf2onnx

            tools |= {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}
        else:
            import torch

            tools |= {"torch": torch.__version__}

        cfg = self.src.config
        self.meta.provenance = {
            "precision": precision,
            "backbone": cfg.model.backbone if cfg else "",
            "decoder": cfg.model.decoder if cfg else "",
            "config": json.dumps(cfg.as_dict() if cfg else {}),
            "dataset": json.dumps(self.src.data),
            "metrics": json.dumps(self.metrics),
            "versions": json.dumps({"skinseg": __version__} | tools),
            "opset": str(self.opset),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": self.src.keras_path.name,
            "source_sha256": files.sha256_file(self.src.keras_path),
        } | (self.extra if precision == "int8" else {})
        return self.meta

    def save(self, precision: str, model: Any) -> Path:
        """Write a variant under its temporary name, with the metadata built once (and this precision)."""
        import onnx

        self.meta.review_threshold = self.review_thresholds.get(precision)
        set_metadata(model, self.provenance(precision))
        model.ir_version = min(model.ir_version, min_ir_version(self.opset))
        onnx.checker.check_model(model)
        path = self.staging(precision)
        files.write_bytes(path, model.SerializeToString())
        self.pending[precision] = path
        return path

    @step("convert to ONNX + onnx.checker")
    def to_onnx(self) -> Path:
        self.onnx_model = convert(self.model, self.tile, self.opset)
        import keras

        tool = "tf2onnx" if keras.backend.backend() == "tensorflow" else "keras on torch"
        self.note = f"{tool}, opset {_opset(self.onnx_model)}, IR {self.onnx_model.ir_version}"
        return self.save("fp32", self.onnx_model)

    def parity(self, path: Path) -> Parity:
        from skinseg.inference.adapter import ModelAdapter

        return compare(self.keras_out, ModelAdapter(path, "cpu").run(self.probe),
                       self.meta.threshold or 0.5)

    @step("parity vs Keras")
    def verify_parity(self) -> None:
        self.pairs = validation_pairs(self.src, self.valid)
        probe = np.random.default_rng(0).integers(0, 256, (8, *self.tile, 3), dtype=np.uint8)
        if self.pairs:
            real = calibration_tiles([p for p, _ in self.pairs], self.meta.scale, self.tile, 8, self.meta.resize)
            probe = np.concatenate([probe, real])
        self.probe = probe
        self.keras_out = self.model.predict(probe.astype(np.float32), verbose=0, batch_size=8)
        found = self.parity(self.pending["fp32"])
        self.diff = found.max_difference
        if not found.ok:
            raise SkinsegError(f"export parity failed: ONNX Runtime does not compute what Keras computes on "
                               f"{len(probe)} tiles ({found.words()}); nothing written")
        self.note = f"max |diff| {self.diff:.1e}, masks {100 * found.mask_share:.3f} % apart"

    @step("onnxslim")
    def simplify_graph(self) -> Path:
        import onnx

        try:
            import onnxslim
        except ImportError:
            raise SkinsegError("--simplify needs onnxslim: pip install onnxslim (or leave --simplify off)") from None
        before = self.pending["fp32"]
        slim = onnxslim.slim(onnx.load(str(before)))
        size_before = before.stat().st_size
        path = self.save("fp32", slim)  # same temporary name: replaces the unsimplified file
        slim_parity = self.parity(path)
        slim_diff = slim_parity.max_difference
        if slim_parity.ok and path.stat().st_size <= size_before:
            self.onnx_model, self.diff = slim, slim_diff
            self.note = f"parity {slim_diff:.1e}"
        else:
            self.save("fp32", self.onnx_model)
            self.note = f"not kept: parity {slim_diff:.1e} or no size gain"
        return self.pending["fp32"]

    @step("validation Jaccard (engine), with and without TTA")
    def validate(self) -> Path:
        from skinseg.shared.images import read_binary_mask
        from skinseg.shared.metrics import mean_jaccard

        self.truths = [read_binary_mask(m)[0] for _, m in self.pairs]
        images = [p for p, _ in self.pairs]
        plain, plain_conf = engine_masks(self.pending["fp32"], images, tta=False)
        self.fp32_masks, self.fp32_jac, tta_note = plain, None, ""
        if self.pairs:
            flipped, flipped_conf = engine_masks(self.pending["fp32"], images, tta=True)
            j_plain, j_tta = mean_jaccard(plain, self.truths), mean_jaccard(flipped, self.truths)
            self.meta.tta = (j_tta - j_plain) * 100 >= TTA_GAIN
            self.fp32_masks, self.fp32_jac = (flipped, j_tta) if self.meta.tta else (plain, j_plain)
            self.review_point("fp32", self.fp32_masks, flipped_conf if self.meta.tta else plain_conf)
            self.metrics["tta"] = {"val_jaccard_without": j_plain, "val_jaccard_with": j_tta,
                                   "gain_points": (j_tta - j_plain) * 100, "on": self.meta.tta}
            tta_note = f", TTA {'on' if self.meta.tta else 'off'} ({(j_tta - j_plain) * 100:+.2f} points)"
        self.rows.append({"precision": "fp32", "parity": f"max|diff| {self.diff:.1e}", "val_jaccard": self.fp32_jac,
                          "agreement_vs_fp32": 1.0 if self.pairs else None})
        self.metrics["onnx_fp32"] = {"val_jaccard": self.fp32_jac, "parity_max_abs": self.diff,
                                     "val_images": len(self.pairs)}
        self.note = (f"{len(self.pairs)} images" if self.pairs else "no validation split") + tta_note
        if "fp32" in self.review_thresholds:
            self.note += f", review below {self.review_thresholds['fp32']:.3f}"
        return self.save("fp32", self.onnx_model)  # now with the validation figures, TTA and review threshold

    def review_point(self, precision: str, masks: list[np.ndarray], confidences: list[float]) -> None:
        """The review threshold for this file: flag at most --max-flagged of the validation images (the
        least confident); its figures go to the metrics."""
        from skinseg.inference.review import choose_threshold, review_figures
        from skinseg.shared.metrics import scores

        threshold = choose_threshold(confidences, self.max_flagged)
        self.review_thresholds[precision] = threshold
        jaccards = [scores(m, t, with_hd95=False)["jaccard"] for m, t in zip(masks, self.truths, strict=True)]
        figures = review_figures(confidences, jaccards, threshold)
        figures.pop("risk_coverage")
        self.metrics.setdefault("review", {})[precision] = figures | {"max_flagged": self.max_flagged}

    def agreement(self, precision: str) -> tuple[dict[str, Any], Gate | None]:
        """A variant against FP32 on the validation split, through the one INT8/FP16 gate's measure."""
        if not self.pairs:
            return {"precision": precision, "val_jaccard": None, "agreement_vs_fp32": None}, None
        masks, confidences = engine_masks(self.pending[precision], [p for p, _ in self.pairs])
        self.review_point(precision, masks, confidences)
        g = gate(self.fp32_masks, masks, self.truths, self.max_drop, self.max_disagreement)
        return {"precision": precision, "val_jaccard": g.int8_jaccard, "agreement_vs_fp32": g.agreement}, g

    @step("fp16 variant")
    def make_fp16(self) -> Path:
        model = to_fp16(self.onnx_model)
        self.save("fp16", model)
        self.rows.append(self.agreement("fp16")[0])  # measured on the saved file, which decides its threshold
        return self.save("fp16", model)  # again, now with its review threshold

    def calibration_images(self) -> list[Path]:
        calib = self.calibration
        if calib is None and self.src.config is not None:
            dirs = config_split(self.src.config, "train")
            calib = dirs.images if dirs else None
        if calib is None or not Path(calib).is_dir():
            raise SkinsegError("--int8 needs --calibration DIR (training images), or a run folder whose config "
                               "names them")
        images, _ = collect_images([calib])
        if not images:
            raise SkinsegError(f"--calibration {calib}: no images found")
        return images

    @step("int8 QDQ")
    def make_int8(self) -> Path:
        import onnx

        from skinseg.inference.adapter import ModelAdapter

        tiles = calibration_tiles(self.calibration_images(), self.meta.scale, self.tile, self.calibration_tiles,
                                  self.meta.resize, seed=1)
        raw = self.staging("int8")
        self.pending["int8"] = raw
        quantize_file(self.pending["fp32"], raw, ModelAdapter(self.pending["fp32"], "cpu"), tiles, self.target)
        self.extra["quantization"] = next(p.value for p in onnx.load(str(raw)).metadata_props
                                          if p.key == "skinseg.quantization")
        row, g = self.agreement("int8")
        row["drop_points"] = g.loss if g else None
        self.metrics["onnx_int8"] = {"val_jaccard": row["val_jaccard"], "drop_points_vs_fp32": row["drop_points"],
                                     "calibration_tiles": len(tiles)}
        if g:
            g.enforce(self.target, self.force, "Use more --calibration images")
        self.rows.append(row)
        self.note = f"{len(tiles)} calibration tiles, target {self.target}"
        return self.save("int8", onnx.load(str(raw)))

    @step("publish (verified files renamed into place)")
    def publish(self) -> None:
        from skinseg.inference.adapter import ModelAdapter

        for row in self.rows:
            tmp, final = self.pending.pop(row["precision"]), self.paths[row["precision"]]
            os.replace(tmp, final)
            row["file"] = final
            row["size_mb"] = _mb(final)
            row["tile_ms"] = ModelAdapter(final, "cpu").latency_ms()
        for tmp in self.pending.values():
            with contextlib.suppress(OSError):
                tmp.unlink()

    def table(self) -> None:
        rows = [[r["file"].name, f"{r['size_mb']:.2f}", r["precision"],
                 r.get("parity") or (f"mask J {r['agreement_vs_fp32']:.4f}" if r.get("agreement_vs_fp32") else ""),
                 f"{r['val_jaccard']:.4f}" if r.get("val_jaccard") is not None else "n/a", f"{r['tile_ms']:.2f}"]
                for r in self.rows]
        fp32 = self.paths["fp32"]
        ui.table(f"skinseg export -> {fp32.parent}",
                 ["file", "MB", "precision", "parity / agreement", "val Jaccard (engine, full split)",
                  "ms / tile (CPU)"], rows)
        best = self.rows[-1]["file"]
        cfg = self.src.config
        if cfg is not None and config_split(cfg, "test") is not None:
            scored = f"skinseg eval {cfg.path} --model {fp32.parent}"  # the config's [test] split, this run's model
        else:
            scored = f"skinseg eval --images TEST/images --masks TEST/masks --model {fp32}" + "".join(
                f" --model {r['file']}" for r in self.rows[1:])
        ui.out.print(f"next:\n  skinseg infer IMAGES --model {best}\n  {scored}\n  skinseg bench --model {best}")


def export(source: Path, opset: int = 17, output: Path | None = None, fp16: bool = False, int8: bool = False,
           calibration: Path | None = None, valid: Path | None = None, max_drop: float = 0.5, force: bool = False,
           simplify: bool = False, calibration_tiles: int = 64, quiet: bool = False,
           target: str = "cpu", max_disagreement: float = 3.0,
           max_flagged: float = MAX_FLAGGED) -> list[dict[str, Any]]:
    """Export, verify and report; returns one summary row per written file."""
    return Exporter(source, opset, output, fp16, int8, calibration, valid, max_drop, force, simplify,
                    calibration_tiles, quiet, target, max_disagreement, max_flagged).run()
