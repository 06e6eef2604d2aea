"""`skinseg bench`: per-tile latency, throughput, and the engine's overhead over bare session.run."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import DEFAULT_MAX_PIXELS
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.inference.tiling import tile_batches
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import LoadedImage
from skinseg.shared.synthetic import synth_pair
from skinseg.shared.system import peak_rss_mb


def bare_inputs(seg: Segmenter, loaded: LoadedImage) -> list[np.ndarray]:
    """The exact model inputs the engine feeds for this image, prepared ahead (for the bare timing)."""
    work = seg.to_working(loaded)
    return [np.ascontiguousarray(seg.adapter.to_model_input(tiles))
            for tiles, _ in tile_batches(work, seg.tile, seg.overlap, seg.batch)]


def _write_synthetic(path: str, size: tuple[int, int]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no child traceback
    from skinseg.shared import files
    from skinseg.shared.images import encode

    rgb, _ = synth_pair(size[0], size[1], rng=1)
    files.write_bytes(path, encode(".jpg", rgb, 95))


def _draw(path: str, size: tuple[int, int]) -> int | None:
    """Draw the synthetic image in a child process; Ctrl-C stops the child too. Its exit code."""
    proc = multiprocessing.get_context("spawn").Process(target=_write_synthetic, args=(path, size))
    proc.start()
    try:
        proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        proc.join()
        raise
    return proc.exitcode


def run_bench(seg: Segmenter, image: str | None = None, size: tuple[int, int] = (2848, 4288),
              repeat: int = 3) -> dict[str, Any]:
    """Time the engine end to end and bare session.run over the same tiles; medians of `repeat`.

    A synthetic image is drawn in a child process and read back as a JPEG, so drawing it does not
    count towards this process's peak memory.
    """
    source = image or f"synthetic {size[1]}x{size[0]}"
    with tempfile.TemporaryDirectory() as tmp:
        if not image:
            image = os.path.join(tmp, "synthetic.jpg")
            _draw(image, size)
        loaded = seg.load(image)  # as infer decodes it (--exact-decode included)
    rss_before = peak_rss_mb()
    seg.adapter(np.zeros((seg.batch, *seg.tile, 3), np.uint8))  # warm-up at the batch shape used
    engine = []
    for _ in range(repeat):
        t = time.perf_counter()
        pred = seg.predict(loaded)
        engine.append(time.perf_counter() - t)
    rss_engine = peak_rss_mb()
    del pred
    batches = bare_inputs(seg, loaded)
    n_tiles = sum(b.shape[0] for b in batches)
    bare = []
    for _ in range(repeat):
        t = time.perf_counter()
        for b in batches:
            seg.adapter.run(b)
        bare.append(time.perf_counter() - t)
    e, b = statistics.median(engine), statistics.median(bare)
    mp = loaded.height * loaded.width / 1e6
    return {
        "image": source,
        "size": f"{loaded.width}x{loaded.height}",
        "working size": "x".join(map(str, seg.working_size(loaded.height, loaded.width)[::-1])),
        "tile": f"{seg.tile[0]}x{seg.tile[1]}",
        "tiles": n_tiles,
        "model runs per tile": 4 if seg.tta else 1,  # flip TTA: the tile and its three flips
        "tiles per session run": min(seg.batch, n_tiles * (4 if seg.tta else 1)),
        "providers": ",".join(seg.providers),
        "whole image s (engine, decode excluded)": round(e, 3),
        "model alone s (session.run on its tiles)": round(b, 3),
        "whole image / model alone": round(e / b, 3),
        "per-tile latency ms": round(1000 * b / n_tiles, 2),
        "megapixels/s": round(mp / e, 2),
        "peak RSS MB (engine)": round(rss_engine, 1),
        "RSS before MB": round(rss_before, 1),
    }


def parse_size(size: str) -> tuple[int, int]:
    """'WxH' -> (h, w)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SkinsegError(f"--size {size!r}: expected WxH, e.g. 4288x2848") from None
    if min(w, h) < 16 or w * h > DEFAULT_MAX_PIXELS:
        raise SkinsegError(f"--size {size}: each side at least 16 px and at most {DEFAULT_MAX_PIXELS / 1e6:.0f} MP "
                           "in all (the image reader's limit)")
    return h, w


def compare(models: list[Path], threads: int, batch: int, repeat: int) -> list[list[str]]:
    """Per-tile milliseconds of each model under each CPU-side setting available here: the CPU EP at
    graph levels extended and all, the OpenVINO EP (fp32, and bf16 where the CPU has bf16 units)."""
    import onnxruntime as ort

    from skinseg.inference.adapter import ModelAdapter
    from skinseg.shared.system import has_bf16

    settings = [("cpu", "extended", "fp32"), ("cpu", "all", "fp32")]
    if "OpenVINOExecutionProvider" in ort.get_available_providers():
        settings.append(("openvino", "all", "fp32"))
        if has_bf16():
            settings.append(("openvino", "all", "bf16"))
    rows: list[tuple[str, str, str, str, float]] = []
    for path in models:
        for provider, level, precision in settings:
            adapter = ModelAdapter(path, provider, threads=threads, graph_opt=level, precision=precision)
            n = batch or max(1, min(16, 512 * 512 // (adapter.tile[0] * adapter.tile[1])))
            ms = adapter.latency_ms(runs=max(5, repeat), batch=n)
            label = adapter.providers[0].removesuffix("ExecutionProvider")
            kind = adapter.spec.metadata.provenance.get("precision", "")
            shown = f"{kind or precision} + bf16" if precision == "bf16" else kind or precision
            rows.append((path.name, label, level if provider == "cpu" else "-", shown, ms))
    best = min(r[4] for r in rows)
    return [[m, p, g, pr, f"{ms:.2f}", f"{ms / best:.2f}x"] for m, p, g, pr, ms in rows]


def run(model: Path | None, provider: str, engine: EngineOptions, image: Path | None, size: str,
        repeat: int, stages: bool = False, overlay_max: int | None = None, compare_settings: bool = False) -> None:
    """The command: time the engine as infer runs it and print the figures; with `stages`, where an
    image's time goes in infer's path (on --image: a file or a folder of the user's own images)."""
    from skinseg import ui
    from skinseg.runner.encodings import check_overlay_max
    from skinseg.runner.models import choose_model

    check_overlay_max(overlay_max)
    hw = parse_size(size)
    if repeat < 1:
        raise SkinsegError(f"--repeat {repeat}: must be at least 1")
    if image is not None and not image.exists():
        raise SkinsegError(f"--image {image}: no such file or folder")
    if compare_settings:
        from skinseg.inference.model_files import shipped_models
        from skinseg.shared.system import cpu_flags

        models = [choose_model(model, None, "cpu")] if model else list(shipped_models().values())
        with ui.console.status("timing every model under every CPU-side setting..."):
            rows = compare([m for m in models if m is not None], engine.threads, engine.batch, repeat)
        feats = " ".join(f for f in ("avx2", "avx512_vnni", "amx_int8", "amx_bf16") if f in cpu_flags())
        ui.table(f"skinseg bench --compare: ms per tile on this CPU ({feats or 'no AVX2'})",
                 ["model", "provider", "graph", "precision", "ms/tile", "vs fastest"], rows, right=(4, 5))
        return
    seg = Segmenter(choose_model(model, None, provider), provider, engine)
    title = f"{seg.model_path.name} at working scale {seg.scale or 'native'}, {', '.join(seg.providers[:1])}"
    with tempfile.TemporaryDirectory(prefix="skinseg-bench-") as tmp:
        images = _stage_images(image, hw, Path(tmp))
        shown = str(images[0]) if image else f"synthetic {hw[1]}x{hw[0]}"
        if stages:
            with ui.console.status(f"timing {len(images)} images by stage..."):
                times = stage_times(seg, images, overlay_max, repeat)
            ui.table(f"skinseg bench --stages: ms per image, {title}", ["stage", "ms", "share"], stage_rows(times),
                     right=(1, 2))
            return
        with ui.console.status("benchmarking..."):
            res = run_bench(seg, str(images[0]), hw, repeat)
            times = stage_times(seg, images[:1], overlay_max, repeat)
    res["image"] = shown
    ui.table(f"skinseg bench: {title}", ["measure", "value"], [[k, v] for k, v in res.items()], right=(1,))
    ui.out.print("where an image's time goes, as infer runs it:", soft_wrap=True)
    ui.table(f"ms per image by stage: {shown}", ["stage", "ms", "share"], stage_rows(times), right=(1, 2))
    model = times["model"] / sum(times.values())
    ui.out.print(f"the model is {100 * model:.0f} % of an image's time here; the rest is decoding, resizing, "
                 "post-processing and writing (bench --stages --image DIR for your own images)", soft_wrap=True)


def _stage_images(image: Path | None, hw: tuple[int, int], tmp: Path) -> list[Path]:
    """The images to time: --image (a file or a folder), else a synthetic JPEG of `hw` drawn in a child
    process (so drawing it does not count towards this process's peak memory) inside `tmp`."""
    from skinseg.shared.dataset import collect_images

    if image is None:
        path = tmp / "synthetic.jpg"
        if _draw(str(path), hw) != 0 or not path.is_file():
            raise SkinsegError(f"--size {hw[1]}x{hw[0]}: could not draw a synthetic image of that size")
        return [path]
    images, _ = collect_images([str(image)])
    if not images:
        raise SkinsegError(f"--image {image}: no images found")
    return images


STAGES = ("decode", "to working scale", "model", "probability to full size", "post-processing", "confidence",
          "figures and diameter", "mask PNG", "overlay JPEG")


def stage_times(seg: Segmenter, images: list[Path], overlay_max: int | None = None,
                repeat: int = 1) -> dict[str, float]:
    """Seconds per image in each stage of infer's path (the same functions infer calls), medians over
    `repeat` passes."""
    from skinseg.runner.result import Result

    per: dict[str, list[float]] = {k: [] for k in STAGES}
    for _ in range(repeat):
        totals = dict.fromkeys(STAGES, 0.0)
        for path in images:
            t = time.perf_counter()
            loaded = seg.load(path)
            totals["decode"] += time.perf_counter() - t
            pred = seg.predict(loaded)
            for k, v in pred.stages.items():
                totals[k] += v
            t = time.perf_counter()
            result = Result.from_prediction(pred, loaded, path)
            totals["figures and diameter"] += time.perf_counter() - t
            t = time.perf_counter()
            result.png  # noqa: B018 - timed: the encoding happens on first use
            totals["mask PNG"] += time.perf_counter() - t
            t = time.perf_counter()
            result.overlay_jpeg(overlay_max)
            totals["overlay JPEG"] += time.perf_counter() - t
        for k in STAGES:
            per[k].append(totals[k] / len(images))
    return {k: statistics.median(v) for k, v in per.items()}


def stage_rows(times: dict[str, float]) -> list[list[str]]:
    total = sum(times.values())
    rows = [[k, f"{1000 * v:.1f}", f"{100 * v / total:.0f} %"] for k, v in times.items()]
    return rows + [["all (one thread, no overlap of reading and writing)", f"{1000 * total:.1f}", "100 %"]]
