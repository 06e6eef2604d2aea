"""`skinseg export`: a verified, self-describing ONNX model (FP32), with optional FP16 and INT8 variants.

Steps, each logged with size and time: load the .keras file (safe mode) -> convert with tf2onnx
(uint8 NHWC input, preprocessing inside the graph, dynamic batch) -> embed metadata -> check ->
optional simplification -> parity against Keras (FP32 max |diff| <= 1e-4 or the export fails) ->
FP16 / INT8 variants with their mask agreement and validation Jaccard -> a summary table.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import __version__, ui
from skinseg.inference.segmenter import sha256_file
from skinseg.inference.spec import FORMAT_VERSION, META_PREFIX
from skinseg.shared import atomic
from skinseg.shared.errors import SkinsegError

PARITY_TOL = 1e-4
MIN_OPSET, MAX_OPSET = 13, 21


@dataclass
class Source:
    """What is exported: the .keras file and, when found, its run folder's config and records."""

    keras_path: Path
    run_dir: Path | None
    config: Any = None  # skinseg.shared.config.Config
    data: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def find_source(path: Path) -> Source:
    """A run folder (uses best.keras) or a .keras file (its folder's config.ini is used if present)."""
    path = Path(path)
    if path.is_dir():
        keras_path = path / "best.keras"
        if not keras_path.is_file():
            raise SkinsegError(f"{path}: no best.keras in this folder; give a run folder of skinseg train "
                               "or a .keras file")
    elif path.is_file():
        keras_path = path
        if path.suffix != ".keras":
            raise SkinsegError(f"{path}: not a .keras file; export takes a Keras 3 model saved by skinseg train")
    else:
        raise SkinsegError(f"{path}: no such file or folder")
    run = keras_path.parent
    src = Source(keras_path, run if (run / "config.ini").is_file() else None)
    if src.run_dir:
        from skinseg.shared.config import load_config

        src.config = load_config(run / "config.ini")
        for name, attr in (("data.json", "data"), ("state.json", "state")):
            if (run / name).is_file():
                setattr(src, attr, json.loads((run / name).read_text()))
        if (run / "history.csv").is_file():
            import csv

            with open(run / "history.csv", newline="") as fh:
                src.history = list(csv.DictReader(fh))
    return src


def load_keras(path: Path) -> Any:
    """Load in safe mode (no arbitrary code) with skinseg's custom objects registered."""
    import zipfile

    from skinseg.training.tf_env import import_tf

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


def metadata(src: Source, tile: tuple[int, int], opset: int, precision: str, metrics: dict[str, Any]) -> dict[str, str]:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    cfg = src.config
    scale = cfg.model.working_scale if cfg else "native"
    post = {"keep": "largest", "fill_holes": True, "blur": 2.0 if cfg and cfg.mask.blur else 0.0}
    meta = {
        "format": FORMAT_VERSION,
        "layout": "NHWC",
        "channel_order": "RGB",
        "input_dtype": "uint8",
        "input_range": "0,255",
        "output": "probability",
        "tile_height": str(tile[0]),
        "tile_width": str(tile[1]),
        "scale": str(scale),
        "threshold": str(round(cfg.mask.threshold, 4) if cfg else 0.5),
        "postprocess": json.dumps(post),
        "precision": precision,
        "backbone": cfg.model.backbone if cfg else "",
        "decoder": cfg.model.decoder if cfg else "",
        "config": json.dumps(cfg.as_dict() if cfg else {}),
        "dataset": json.dumps(src.data),
        "metrics": json.dumps(metrics),
        "versions": json.dumps({"skinseg": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}),
        "opset": str(opset),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": src.keras_path.name,
        "source_sha256": sha256_file(src.keras_path),
    }
    return {META_PREFIX + k: v for k, v in meta.items()}


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "skinseg"
    model.producer_version = __version__
    model.doc_string = "skinseg lesion segmentation: uint8 RGB NHWC tiles in, lesion probability out"


def save_onnx(model: Any, path: Path) -> None:
    atomic.write_bytes(path, model.SerializeToString())


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# -- data for verification and calibration ------------------------------------------------------------
def tiles_from_images(images: list[Path], scale: int | str, tile: tuple[int, int], count: int,
                      seed: int = 0) -> np.ndarray:
    """`count` uint8 tiles cut at random positions from images resized to the working scale."""
    import cv2

    from skinseg.inference.tiling import pad_to_tile
    from skinseg.shared.images import load_image
    from skinseg.training.data import working_size

    rng = np.random.default_rng(seed)
    th, tw = tile
    out = []
    for i in range(count):
        loaded = load_image(images[i % len(images)], None if scale == "native" else int(scale))
        h, w = working_size(loaded.height, loaded.width, scale)
        img = cv2.resize(loaded.rgb, (w, h), interpolation=cv2.INTER_AREA) if loaded.rgb.shape[:2] != (h, w) \
            else loaded.rgb
        img = pad_to_tile(img, th, tw)
        y = int(rng.integers(0, img.shape[0] - th + 1))
        x = int(rng.integers(0, img.shape[1] - tw + 1))
        out.append(img[y : y + th, x : x + tw])
    return np.stack(out)


def validation_pairs(src: Source, valid: Path | None) -> list[tuple[Path, Path]]:
    from skinseg.shared.dataset import find_pairs, split_folder

    if valid is not None:
        return split_folder(*find_pairs(valid)).pairs
    cfg = src.config
    if cfg and cfg.eval.image_datapath:
        img = Path(cfg.eval.image_datapath)
        mask = Path(cfg.eval.mask_datapath) if cfg.eval.mask_datapath else img
        if img.is_dir():
            return split_folder(img, mask).pairs
    return []


def mean_jaccard(model_path: Path, pairs: list[tuple[Path, Path]]) -> tuple[float, list[np.ndarray]]:
    """Validation Jaccard through the engine (the code path infer and eval use); also returns the masks."""
    from skinseg.evaluation.metrics import scores
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared.images import binarize, read_mask

    seg = Segmenter(model_path, "cpu")
    jac, masks = [], []
    for img, mask in pairs:
        pred = seg.predict(img).mask
        truth = binarize(read_mask(mask))
        jac.append(scores(pred, truth, with_hd95=False)["jaccard"])
        masks.append(pred)
    return float(np.mean(jac)), masks


def mask_dice(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean Dice between two precisions' masks on the same images."""
    from skinseg.evaluation.metrics import scores

    return float(np.mean([scores(x, y, with_hd95=False)["dice"] for x, y in zip(a, b, strict=True)]))


def tile_latency_ms(path: Path, tile: tuple[int, int], runs: int = 20) -> float:
    sess = ort_session(path)
    x = np.random.default_rng(0).integers(0, 256, (1, *tile, 3), dtype=np.uint8)
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def fp32_islands(model: Any) -> list[str]:
    """Nodes kept in FP32 when quantizing: the first convolution and the output head (the classifier
    convolution onwards). Measured on the shipped model: this lost 0.37 instead of 0.55 Jaccard points
    and ran 2.5x faster than quantizing everything (the quantized input chain was slow on the CPU)."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return list(dict.fromkeys([nodes[convs[0]].name] + [n.name for n in nodes[convs[-1]:]]))


def quantize_int8(fp32: Path, out: Path, tiles: np.ndarray) -> None:
    """Static QDQ INT8 (per-channel weights), pre-processed first, calibrated on uint8 tiles."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(tiles[i : i + 1] for i in range(len(tiles)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"image": x}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        q = Path(tmp) / "q.onnx"
        quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=fp32_islands(onnx.load(str(pre))))
        atomic.write_bytes(out, q.read_bytes())


def to_fp16(fp32_model: Any) -> Any:
    """FP16 weights and compute, I/O kept uint8 in / float32 out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(fp32_model, keep_io_types=True)


# -- the command ----------------------------------------------------------------------------------
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


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def export(source: Path, opset: int = 17, output: Path | None = None, fp16: bool = False, int8: bool = False,
           calibration: Path | None = None, valid: Path | None = None, max_drop: float = 0.5, force: bool = False,
           simplify: bool = True, calibration_tiles: int = 64, quiet: bool = False) -> list[dict[str, Any]]:
    """Export, verify and report; returns one summary row per written file."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise SkinsegError(f"--opset {opset}: supported opsets are {MIN_OPSET} to {MAX_OPSET} (17 recommended)")
    src = find_source(source)
    out = Path(output) if output else (src.keras_path.parent / "model.onnx")
    fp32_path, fp16_path, int8_path = variant_paths(out)
    atomic.ensure_writable_dir(fp32_path.parent)
    log = (lambda msg: None) if quiet else ui.info

    def step(name: str, t0: float, path: Path | None = None) -> None:
        size = f"  {_mb(path):.2f} MB" if path else ""
        log(f"[green]✓[/] {name:<34} {time.perf_counter() - t0:6.1f} s{size}")

    t = time.perf_counter()
    model = load_keras(src.keras_path)
    shape = model.input_shape
    if len(shape) != 4 or shape[-1] != 3 or not shape[1] or not shape[2]:
        raise SkinsegError(f"{src.keras_path}: model input {shape} is not a fixed-size RGB image (N, H, W, 3)")
    tile = (int(shape[1]), int(shape[2]))
    model = float32_copy(model, src.config)
    step(f"load {src.keras_path.name} ({tile[0]}x{tile[1]})", t, src.keras_path)

    import onnx

    t = time.perf_counter()
    onnx_model = convert(model, tile, opset)
    best = {k: float(v) for k, v in next((r for r in src.history if int(r["epoch"]) == src.state.get("best_epoch")),
                                         {}).items() if k.startswith("val_")}
    set_metadata(onnx_model, metadata(src, tile, opset, "fp32", {"keras_validation": best}))
    onnx.checker.check_model(onnx_model)
    save_onnx(onnx_model, fp32_path)
    step(f"tf2onnx opset {opset}, IR {onnx_model.ir_version}, checker", t, fp32_path)

    # parity data: random tiles plus real validation tiles
    pairs = validation_pairs(src, valid)
    scale = src.config.model.working_scale if src.config else "native"
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, (8, *tile, 3), dtype=np.uint8)
    if pairs:
        probe = np.concatenate([probe, tiles_from_images([p for p, _ in pairs], scale, tile, 8)])
    keras_out = model.predict(probe.astype(np.float32), verbose=0, batch_size=8)

    def parity(path: Path) -> float:
        sess = ort_session(path)
        return float(np.abs(sess.run(None, {"image": probe})[0] - keras_out).max())

    t = time.perf_counter()
    diff = parity(fp32_path)
    if diff > PARITY_TOL:
        fp32_path.unlink(missing_ok=True)
        raise SkinsegError(f"export parity failed: ONNX Runtime differs from Keras by {diff:.2e} (max |probability|"
                           f" difference, limit {PARITY_TOL:.0e}); nothing written")
    step(f"parity vs Keras: max |diff| {diff:.1e}", t)

    if simplify:
        t = time.perf_counter()
        try:
            import onnxslim

            slim = onnxslim.slim(onnx.load(str(fp32_path)))
            set_metadata(slim, {p.key: p.value for p in onnx_model.metadata_props})
            slim.ir_version = min(slim.ir_version, min_ir_version(opset))
            tmp = fp32_path.with_name(f".{fp32_path.stem}.slim.onnx")
            save_onnx(slim, tmp)
            slim_diff = parity(tmp)
            if slim_diff <= PARITY_TOL and tmp.stat().st_size <= fp32_path.stat().st_size:
                os.replace(tmp, fp32_path)
                onnx_model, diff = slim, slim_diff
                step(f"onnxslim (parity {slim_diff:.1e})", t, fp32_path)
            else:
                tmp.unlink()
                log(f"  onnxslim skipped: parity {slim_diff:.1e} or no size gain")
        except ImportError:
            log("  onnxslim not installed: graph not simplified")

    rows: list[dict[str, Any]] = []
    fp32_jac, fp32_masks = (mean_jaccard(fp32_path, pairs) if pairs else (None, []))
    rows.append({"file": fp32_path, "precision": "fp32", "parity": f"max|diff| {diff:.1e}",
                 "val_jaccard": fp32_jac, "mask_dice_vs_fp32": 1.0 if pairs else None})
    metrics = {"keras_validation": best, "onnx_fp32": {"val_jaccard": fp32_jac, "parity_max_abs": diff,
                                                        "val_images": len(pairs)}}
    set_metadata(onnx_model, metadata(src, tile, opset, "fp32", metrics))
    save_onnx(onnx_model, fp32_path)

    if fp16:
        t = time.perf_counter()
        half = to_fp16(onnx_model)
        set_metadata(half, metadata(src, tile, opset, "fp16", metrics))
        save_onnx(half, fp16_path)
        jac, masks = mean_jaccard(fp16_path, pairs) if pairs else (None, [])
        rows.append({"file": fp16_path, "precision": "fp16", "val_jaccard": jac,
                     "mask_dice_vs_fp32": mask_dice(fp32_masks, masks) if pairs else None})
        step("fp16 variant", t, fp16_path)

    if int8:
        t = time.perf_counter()
        calib_dir = calibration
        if calib_dir is None and src.config and src.config.train.image_datapath:
            calib_dir = Path(src.config.train.image_datapath)
        if calib_dir is None or not Path(calib_dir).is_dir():
            raise SkinsegError("--int8 needs --calibration DIR (training images), or a run folder whose config "
                               "names them")
        from skinseg.shared.dataset import collect_images

        calib_images, _ = collect_images([calib_dir])
        if not calib_images:
            raise SkinsegError(f"--calibration {calib_dir}: no images found")
        tiles = tiles_from_images(calib_images, scale, tile, calibration_tiles, seed=1)
        quantize_int8(fp32_path, int8_path, tiles)
        q = onnx.load(str(int8_path))
        jac, masks = mean_jaccard(int8_path, pairs) if pairs else (None, [])
        drop = (fp32_jac - jac) * 100 if pairs else None
        row = {"file": int8_path, "precision": "int8", "val_jaccard": jac,
               "mask_dice_vs_fp32": mask_dice(fp32_masks, masks) if pairs else None, "drop_points": drop}
        set_metadata(q, metadata(src, tile, opset, "int8", metrics | {"onnx_int8": {
            "val_jaccard": jac, "drop_points_vs_fp32": drop, "calibration_tiles": len(tiles)}}))
        q.ir_version = min(q.ir_version, min_ir_version(opset))
        save_onnx(q, int8_path)
        step(f"int8 QDQ ({len(tiles)} calibration tiles)", t, int8_path)
        if drop is not None and drop > max_drop and not force:
            int8_path.unlink()
            raise SkinsegError(f"INT8 loses {drop:.2f} Jaccard points on validation (limit --max-drop {max_drop}); "
                               "file removed. Use more --calibration images, or --force to keep it")
        rows.append(row)

    for r in rows:
        r["size_mb"] = _mb(r["file"])
        r["tile_ms"] = tile_latency_ms(r["file"], tile)
    if not quiet:
        _table(rows, fp32_path)
    return rows


def _table(rows: list[dict[str, Any]], fp32: Path) -> None:
    from rich.table import Table

    t = Table(title=f"skinseg export -> {fp32.parent}")
    for c in ("file", "MB", "precision", "parity / agreement", "val Jaccard", "ms / tile (CPU)"):
        t.add_column(c)
    for r in rows:
        agree = r.get("parity") or (f"mask Dice {r['mask_dice_vs_fp32']:.4f}" if r.get("mask_dice_vs_fp32") else "")
        jac = f"{r['val_jaccard']:.4f}" if r.get("val_jaccard") is not None else "n/a"
        t.add_row(r["file"].name, f"{r['size_mb']:.2f}", r["precision"], agree, jac, f"{r['tile_ms']:.2f}")
    ui.out.print(t)
    best = rows[-1]["file"]
    ui.out.print("next:\n"
                 f"  skinseg infer IMAGES --model {best}\n"
                 f"  skinseg eval --images TEST/images --masks TEST/masks --model {fp32}"
                 + "".join(f" --model {r['file']}" for r in rows[1:]) + "\n"
                 f"  skinseg bench --model {best}")
