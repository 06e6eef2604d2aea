"""`skinseg quantize`: a static INT8 file from any FP32 model the engine can run, gated against FP32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.inference.int8 import calibration_tiles, check_limit, check_target, gate, quantize_file
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import files, system
from skinseg.shared.dataset import collect_images, locate_split, split_pairs
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import read_binary_mask

GATE_IMAGES = 32  # calibration images the gate compares on when there are no masks


def quantize_model(model: Path, calibration: list[Path], output: Path | None = None, target: str = "cpu", *,
                   pairs: list[tuple[Path, Path]] | None = None, max_drop: float | None = None,
                   max_disagreement: float | None = None, force: bool = False,
                   engine: EngineOptions | None = None, count: int = 64) -> dict[str, Any]:
    """Quantize, then gate (inference/int8.py): with image/mask `pairs`, on the Jaccard lost against
    them; without, on disagreement with the FP32 model's own masks on calibration images."""
    check_target(target)
    check_limit("--max-drop", max_drop)
    check_limit("--max-disagreement", max_disagreement)
    if count < 1:
        raise SkinsegError(f"--tiles {count}: must be at least 1 (64 is the default)")
    model = Path(model)
    if already_quantized(model):
        raise SkinsegError(f"{model} is already INT8 (it has QuantizeLinear/DequantizeLinear nodes); quantize its "
                           "FP32 source instead")
    out = Path(output) if output else model.with_name(f"{model.stem.removesuffix('-fp32')}-int8.onnx")
    if out.resolve() == model.resolve():
        raise SkinsegError(f"-o {out} would overwrite the model being quantized; choose another name")
    fp32 = Segmenter(model, "cpu", engine)
    tiles = calibration_tiles(calibration, fp32.scale, fp32.tile, count, fp32.resize, seed=1)
    files.ensure_writable_dir(out.parent)
    tmp = out.with_name(f".{out.stem}.quantize.onnx")
    try:
        quantize_file(model, tmp, fp32.adapter, tiles, target)
        q = Segmenter(tmp, "cpu", engine)
        m32, m8, truths = gate_masks(fp32, q, pairs, calibration)
        result = gate(m32, m8, truths, max_drop, max_disagreement)
        result.enforce(target, force, f"Try more calibration tiles (--tiles, now {len(tiles)})")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": out, "target": target, "calibration_tiles": len(tiles), "gate": result}


def already_quantized(model: Path) -> bool:
    try:
        import onnx

        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not loadable: the engine says why, with its own message
        return False
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in graph.node)


def gate_masks(fp32: Segmenter, q: Segmenter, pairs: list[tuple[Path, Path]] | None,
               calibration: list[Path]) -> tuple[list, list, list | None]:
    """Both models' masks (and the truths) on the gate's images: the pairs, else the first calibration
    images; an unreadable image or a mask of another size is left out and said once; an error when none
    is left."""
    from skinseg.shared.errors import InputError

    m32, m8, truths = [], [], []
    for image, mask in pairs or [(p, None) for p in calibration]:
        if len(m32) == (len(pairs) if pairs else GATE_IMAGES):
            break
        try:
            truth = read_binary_mask(mask)[0] if mask is not None else None
            loaded = fp32.load(image)
            if truth is not None and truth.shape != (loaded.height, loaded.width):
                raise InputError(f"{mask} is {truth.shape[1]}x{truth.shape[0]}, its image "
                                 f"{loaded.width}x{loaded.height}")
            a, b = fp32.predict(loaded).mask, q.predict(loaded).mask
        except InputError as exc:
            ui.warn(f"left out of the INT8 gate: {exc}")
            continue
        m32.append(a)
        m8.append(b)
        truths.append(truth)
    if not m32:
        raise SkinsegError("no usable image for the INT8 gate (every one was unreadable or its mask of another "
                           "size); check --images / --calibration")
    return m32, m8, (truths if pairs else None)


def run(model: Path, calibration: Path, output: Path | None, target: str, images: Path | None, masks: Path | None,
        max_drop: float | None, force: bool, engine: EngineOptions, tiles: int,
        max_disagreement: float | None = None) -> None:
    """The command: check the folders, quantize, print what the gate measured."""
    from skinseg.inference.model_files import names_shipped, resolve_model

    if names_shipped(model):  # outputs beside a shipped model would land in the package: the current folder
        model = resolve_model(str(model))
        output = output or Path(f"{model.stem.removesuffix('-fp32')}-int8-{target}.onnx")
    if not calibration.is_dir():
        raise SkinsegError(f"--calibration {calibration}: no such folder")
    calib, _ = collect_images([calibration])
    if not calib:
        raise SkinsegError(f"--calibration {calibration}: no images found")
    pairs = None
    if images is not None:
        dirs = locate_split(images, masks)
        pairs = split_pairs(dirs.images, dirs.masks).pairs
        if not pairs:
            raise SkinsegError(f"--images {images}: no image/mask pairs (masks named <id>_segmentation.png?)")
    with ui.console.status(f"quantizing {model.name} for {target}..."), system.sigterm_as_interrupt():
        res = quantize_model(model, calib, output, target, pairs=pairs, max_drop=max_drop,
                             max_disagreement=max_disagreement, force=force,
                             engine=engine, count=tiles)
    g = res["gate"]
    fmt = lambda v: "n/a (no --images with masks)" if v is None else f"{v:.4f}"  # noqa: E731
    ui.table(f"skinseg quantize -> {res['file']}", ["measure", "value"],
             [["target", res["target"]], ["calibration tiles", res["calibration_tiles"]],
              ["gate images", g.images], ["FP32 Jaccard", fmt(g.fp32_jaccard)],
              ["INT8 Jaccard", fmt(g.int8_jaccard)], [f"loss ({g.measure})", f"{g.loss:.2f}"],
              ["mask agreement with FP32 (Jaccard)", f"{g.agreement:.4f}"],
              ["size MB", f"{res['file'].stat().st_size / 1e6:.2f}"]], right=(1,))
    ui.out.print(f"wrote {ui.escape(str(res['file']))}")
