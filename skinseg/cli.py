"""The `skinseg` command line. Heavy modules are imported inside commands, so `skinseg --help`
starts fast and never imports TensorFlow."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from skinseg import __version__

_type_of = TyperOption.display_type_rich
# Flags take no value: showing them as `<bool>` made users type `--tta true` (an input named "true").
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _type_of(self, ctx)  # type: ignore

app = typer.Typer(
    name="skinseg",
    help="Skin-lesion segmentation for dermoscopy: train, export, infer, eval.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skinseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    STATE["debug"] = debug


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-caused errors into one red line and exit code 2 (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from skinseg import ui
        from skinseg.shared.errors import SkinsegError

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SkinsegError as exc:
            if STATE["debug"]:
                raise
            ui.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with --debug
            if STATE["debug"]:
                raise
            ui.error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            raise typer.Exit(2) from None

    return wrapper


# ---------------------------------------------------------------------------------------------
# option values: strings are parsed here, the library takes typed values
# ---------------------------------------------------------------------------------------------
def parse_tile(value: str | None) -> tuple[int, int] | None:
    """'512' or '512x384' (height x width) -> (h, w)."""
    from skinseg.shared.errors import SkinsegError

    if not value:
        return None
    try:
        dims = [int(p) for p in value.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 8:
        raise SkinsegError(f"--tile {value!r}: expected N or HxW in pixels, each at least 8, e.g. 512 or 384x512")
    return dims[0], dims[-1]


def parse_scale(value: str | None) -> int | None | str:
    """'native' -> None, '1024' -> 1024, no value -> 'model' (the model's own scale)."""
    from skinseg.shared.errors import SkinsegError
    from skinseg.shared.scale import MAX_SCALE, MIN_SCALE

    if value is None or value == "":
        return "model"
    if value.lower() == "native":
        return None
    try:
        px = int(value)
    except ValueError:
        px = 0
    if not MIN_SCALE <= px <= MAX_SCALE:
        raise SkinsegError(f"--scale {value!r}: expected a long side in pixels ({MIN_SCALE} to {MAX_SCALE}, "
                           "e.g. 1024) or 'native'")
    return px


def engine_options(overlap: float | None, batch: int, overlay_max: int | None = None) -> None:
    """Flag values checked before any model loads, worded as the flags the user typed."""
    from skinseg.shared.errors import SkinsegError

    if overlap is not None and not 0 <= overlap < 1:
        raise SkinsegError(f"--overlap {overlap}: must be at least 0 and below 1")
    if batch < 0:
        raise SkinsegError(f"--batch {batch}: must be at least 1 (or 0 for auto)")
    if overlay_max is not None and overlay_max < 0:
        raise SkinsegError(f"--overlay-max {overlay_max}: must be 0 (full size) or a long side in px")


# ---------------------------------------------------------------------------------------------
# infer
# ---------------------------------------------------------------------------------------------
ProviderOpt = Annotated[str, typer.Option("--provider", "-p",
                                          help="auto | cpu | cuda | tensorrt | any ONNX Runtime provider.")]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", "-m", help="ONNX model, or fp32 / int8 for a shipped one (default: the shipped one for this machine).")]


@app.command()
@command
def infer(
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files, folders or globs.",
                                                       show_default=False)] = None,
    model: ModelOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: a fresh "
                                                "runs/infer/run-N).")] = None,
    provider: ProviderOpt = "auto",
    scale: Annotated[str | None, typer.Option(help="Working scale: long side in px, or 'native'. "
                                                   "Default: the model's.")] = None,
    tile: Annotated[str | None, typer.Option(help="Tile N or HxW (dynamic-size models only).")] = None,
    overlap: Annotated[float | None, typer.Option(help="Tile overlap fraction (default: the model's, else "
                                                       "0.5).")] = None,
    batch: Annotated[int, typer.Option(help="Tiles per session run (0 = auto from tile size and device).")] = 0,
    threshold: Annotated[float | None, typer.Option(help="Lesion probability threshold "
                                                         "(default: the model's, else 0.5).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Flip test-time augmentation (4x slower).")] = False,
    keep: Annotated[str | None, typer.Option(help="largest | all: connected components to keep.")] = None,
    min_area: Annotated[int | None, typer.Option(help="With --keep all: smallest component kept (px).")] = None,
    fill_holes: Annotated[bool | None, typer.Option("--fill-holes/--no-fill-holes",
                                                    help="Fill holes in the lesion (default: the model's).")] = None,
    blur: Annotated[float | None, typer.Option(help="Gaussian sigma (px) on the probability before "
                                                    "thresholding; 0 = off.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish the run in -o: skip inputs whose outputs the "
                                         "same model and options completed.")] = False,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Add to a non-empty -o folder.")] = False,
    shard: Annotated[str | None, typer.Option(help="K/N: process the K-th of N slices of the inputs.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overlay_max: Annotated[int, typer.Option(help="Long side of overlay JPEGs in px (0 = full size).")] = 2048,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0 = all cores).")] = 0,
    graph_opt: Annotated[str, typer.Option(help="ONNX Runtime graph optimisation: disable | basic | extended | "
                                                "all.")] = "all",
    config: Annotated[Path | None, typer.Option(help="Seed-style config: inputs and options from its "
                                                     "\\[infer] and \\[mask] sections, the model trained from it; "
                                                     "flags win.")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run on Ray: 'local' (a Ray instance on this machine "
                                            "for the run), 'auto', HOST:6379 or ray://HOST:10001 (pip install "
                                            "'skinseg\\[ray]').")] = None,
    workers: Annotated[int, typer.Option(help="With --ray: model actors (0 = one per CPU socket's cores, or one "
                                              "per GPU).")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(help="With --ray: GPUs per actor (e.g. 1, or 0.5 to share "
                                                        "one).")] = 0.0,
    exact_decode: Annotated[bool, typer.Option("--exact-decode", help="Decode JPEGs at full size, never at "
                                               "1/2-1/8 (slower; the model contract's reference path).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
) -> None:
    """Segment lesions in images: writes masks/, overlays/, results.csv and run.json.

    [dim]Examples:[/]
      skinseg infer ./images --provider cuda
      skinseg infer photo.jpg scans/ --model model.onnx --output out/ --tta
    """
    from skinseg import ui
    from skinseg.inference.infer import InferRun, parse_shard, plan_jobs
    from skinseg.inference.segmenter import Segmenter
    from skinseg.models import choose_model
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.errors import SkinsegError
    from skinseg.shared.runfolder import output_folder

    post: dict[str, Any] = {"keep": keep, "min_area": min_area, "fill_holes": fill_holes, "blur": blur}
    if config is not None:
        from skinseg.shared.config import infer_defaults

        defaults = infer_defaults(config)
        inputs = inputs or defaults["inputs"]
        output = output or defaults["output"]
        threshold = defaults["threshold"] if threshold is None else threshold
        post["blur"] = defaults["blur"] if blur is None else blur
    if not inputs:
        raise SkinsegError("no inputs: give image files, folders or globs (skinseg infer --help)")
    engine_options(overlap, batch, overlay_max)
    shard_kn = parse_shard(shard)
    tile_hw, scale_px = parse_tile(tile), parse_scale(scale)
    model_path = choose_model(model, config, provider)
    out = output_folder(output, "infer", resume=resume, exist_ok=exist_ok or shard_kn is not None)
    images, missing = collect_images(inputs, recursive, exclude=[out])
    if not images:
        raise SkinsegError(f"no images found in {' '.join(map(str, inputs))}: " + "; ".join(missing))
    jobs = plan_jobs(images, shard_kn)
    seg = Segmenter(model_path, provider, tile=tile_hw, scale=scale_px, overlap=overlap, batch=batch, tta=tta,
                    threshold=threshold, post=post, threads=threads, graph_opt=graph_opt,
                    reduced_decode=not exact_decode)
    if not quiet:
        d = seg.describe()
        ui.info(f"[bold]skinseg infer[/] {len(jobs)} images -> {ui.escape(str(out))}")
        ui.info(f"  model {ui.escape(d['model'])} ({d['spec']['input']}, tile {d['tile']}, scale {d['scale']})")
        ui.info(f"  providers {', '.join(seg.providers)}" + ("  (auto)" if provider == "auto" else ""))
    options = {"inputs": list(map(str, inputs)), "recursive": recursive, "provider": provider,
               "threshold": threshold, "scale": scale, "tile": tile, "ray": ray}
    if ray:
        from skinseg.inference.distributed import RayInferRun

        engine = {"tile": tile_hw, "scale": scale_px, "overlap": overlap, "batch": batch, "tta": tta,
                  "threshold": threshold, "post": post, "threads": threads, "graph_opt": graph_opt,
                  "reduced_decode": not exact_decode}
        run: Any = RayInferRun(seg, out, address=ray, workers=workers, gpus_per_worker=gpus_per_worker,
                               engine=engine, provider=provider, shard=shard_kn, resume=resume,
                               overlay_max=overlay_max, options=options)
    else:
        if workers or gpus_per_worker:
            raise SkinsegError("--workers and --gpus-per-worker need --ray ADDRESS (e.g. --ray local)")
        run = InferRun(seg, out, shard=shard_kn, resume=resume, overlay_max=overlay_max, options=options)
    with ui.ImageTileProgress(quiet) as bar:
        summary = run.run(jobs, [(m.split(":")[0], m) for m in missing], bar)
    if summary.interrupted:
        ui.warn(f"interrupted: {len(summary.rows)} of {len(jobs)} images done, written to {run.results_path}; "
                f"finish with: {run.resume_command()}")
        raise typer.Exit(130)
    if not quiet:
        run.table(summary)
    raise typer.Exit(1 if summary.failed else 0)


@app.command("eval")
@command
def eval_(
    config: Annotated[Path | None, typer.Argument(help="Seed-style config: scores its \\[test] split with the "
                                                       "model trained from it.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="ONNX model, run folder, or fp32 / "
                                                    "int8 for a shipped one; repeat to compare.")] = None,
    images: Annotated[Path | None, typer.Option(help="Test images folder (or a split folder with images/ and "
                                                     "masks/).")] = None,
    masks: Annotated[Path | None, typer.Option(help="Test masks folder (default: masks/ beside images/, "
                                                    "else the images folder).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report folder (default: a fresh "
                                                "runs/eval/run-N).")] = None,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Write into a non-empty -o folder.")] = False,
    provider: ProviderOpt = "auto",
    scale: Annotated[str | None, typer.Option(help="Working scale override (px or native).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Threshold override.")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Flip test-time augmentation.")] = False,
    keep: Annotated[str | None, typer.Option(help="largest | all.")] = None,
    fill_holes: Annotated[bool | None, typer.Option("--fill-holes/--no-fill-holes",
                                                    help="Fill holes (default: the model's).")] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Write predicted masks.")] = False,
    worst: Annotated[int, typer.Option(help="Images in the worst.png gallery.")] = 12,
    batch: Annotated[int, typer.Option(help="Tiles per session run (0 = auto from tile size and device).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
) -> None:
    """Score models on a test split with ISIC metrics at the masks' resolution.

    Writes metrics.csv, summary.json, worst.png, jaccard_hist.png and threshold_sweep.png.

    [dim]Examples:[/]
      skinseg eval config.ini
      skinseg eval --images test/images --masks test/masks --model fp32.onnx --model int8.onnx
    """
    from skinseg import ui
    from skinseg.evaluation.evaluate import EvalRun, pairs_for
    from skinseg.inference.segmenter import Segmenter
    from skinseg.models import choose_model
    from skinseg.shared.dataset import config_split, locate_split
    from skinseg.shared.errors import SkinsegError
    from skinseg.shared.runfolder import output_folder

    if images is None and config is not None:
        from skinseg.shared.config import load_config

        dirs = config_split(load_config(config, ui.warn), "test")
        if dirs is None:
            raise SkinsegError(f"{config}: [test] image_datapath is not set; or pass --images and --masks")
    elif images is None:
        raise SkinsegError("no test data: give a config with a [test] section, or --images DIR --masks DIR")
    else:
        for flag, folder in (("--images", images), ("--masks", masks)):
            if folder is not None and not Path(folder).is_dir():
                raise SkinsegError(f"{flag} {folder}: no such folder")
        dirs = locate_split(images, masks)
    pairs, problems = pairs_for(dirs.images, dirs.masks)
    if not pairs:
        raise SkinsegError(f"no image/mask pairs in {dirs.images} and {dirs.masks} (masks named "
                           "<id>_segmentation.png?)")
    engine_options(None, batch)
    scale_px = parse_scale(scale)
    paths = [choose_model(m, None, provider) for m in model] if model else [choose_model(None, config, provider)]
    post = {"keep": keep, "fill_holes": fill_holes}
    segs = [Segmenter(m, provider, scale=scale_px, threshold=threshold, tta=tta, post=post, batch=batch)
            for m in paths]
    out = output_folder(output, "eval", exist_ok=exist_ok)
    run = EvalRun(segs, out, save_masks, worst)
    with ui.progress(disable=quiet) as bar:
        results = run.run(dirs, pairs, problems, bar)
    if not quiet:
        run.table(results, f"skinseg eval: {len(pairs)} pairs from {dirs.images}")
        ui.out.print(f"reports in {ui.escape(str(out))}: metrics.csv summary.json worst.png jaccard_hist.png "
                     "threshold_sweep.png")
    run.report_problems(results, problems)
    failed = problems or any(r.summary["errors"] for r in results)
    raise typer.Exit(1 if failed else 0)


# ---------------------------------------------------------------------------------------------
# bench, doctor
# ---------------------------------------------------------------------------------------------
@app.command()
@command
def bench(
    model: ModelOpt = None,
    provider: ProviderOpt = "auto",
    batch: Annotated[int, typer.Option(help="Tiles per session run (0 = auto from tile size and device).")] = 0,
    image: Annotated[Path | None, typer.Option(help="Image to time (default: synthetic).")] = None,
    size: Annotated[str, typer.Option(help="Synthetic image WxH.")] = "4288x2848",
    scale: Annotated[str | None, typer.Option(help="Working scale (px or native; default: the model's, as "
                                                   "infer uses).")] = None,
    tile: Annotated[str | None, typer.Option(help="Tile N or HxW (dynamic-size models).")] = None,
    overlap: Annotated[float | None, typer.Option(help="Tile overlap fraction (default: the model's, else "
                                                       "0.5).")] = None,
    repeat: Annotated[int, typer.Option(help="Timed repetitions (median reported).")] = 3,
    threads: Annotated[int, typer.Option(help="Intra-op threads (0 = all cores).")] = 0,
) -> None:
    """Time the engine as infer runs it: per-tile latency, megapixels/s, overhead against bare session.run."""
    from skinseg import ui
    from skinseg.inference.bench import run_bench
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared.errors import SkinsegError

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SkinsegError(f"--size {size!r}: expected WxH, e.g. 4288x2848") from None
    engine_options(overlap, batch)
    from skinseg.models import choose_model

    seg = Segmenter(choose_model(model, None, provider), provider, tile=parse_tile(tile), scale=parse_scale(scale),
                    overlap=overlap, batch=batch, threads=threads)
    with ui.console.status("benchmarking..."):
        res = run_bench(seg, str(image) if image else None, (h, w), repeat)
    ui.table(f"skinseg bench: {seg.model_path.name} at working scale {seg.scale or 'native'}", ["measure", "value"],
             [[k, v] for k, v in res.items()], right=(1,))


@app.command()
@command
def quantize(
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model (any model the engine can run).")],
    calibration: Annotated[Path, typer.Option(help="Folder of images to calibrate on (training images).")],
    target: Annotated[str, typer.Option(help="cpu (uint8 activations, fast in ONNX Runtime; loads in OpenCV DNN "
                                             "and OpenVINO) | tensorrt (symmetric int8 Q/DQ).")] = "cpu",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="INT8 file (default: MODEL-int8.onnx "
                                                "beside the model).")] = None,
    images: Annotated[Path | None, typer.Option(help="Images with masks to gate on (a split folder, or "
                                                     "images/ with masks/ beside).")] = None,
    masks: Annotated[Path | None, typer.Option(help="Masks for --images (default: by the split rule).")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Largest loss: Jaccard points against the masks, or points "
                                                        "of disagreement with FP32 without masks (0.5 / 3).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Keep an INT8 model that exceeds --max-drop.")] = False,
    tile: Annotated[str | None, typer.Option(help="Tile N or HxW, for models without metadata.")] = None,
    scale: Annotated[str | None, typer.Option(help="Working scale (px or native), for models without "
                                                   "metadata.")] = None,
    tiles: Annotated[int, typer.Option(help="Calibration tiles.")] = 64,
) -> None:
    """Quantize an ONNX model to static INT8 (QDQ), gated against the FP32 model.

    [dim]Examples:[/]
      skinseg quantize model.onnx --calibration dataset/train/images --images dataset/valid
      skinseg quantize model.onnx --calibration dataset/train/images --target tensorrt
    """
    from skinseg import ui
    from skinseg.inference.quantize import quantize_model
    from skinseg.shared.dataset import collect_images, locate_split, split_pairs
    from skinseg.shared.errors import SkinsegError

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
    with ui.console.status(f"quantizing {model.name} for {target}..."):
        res = quantize_model(model, calib, output, target, pairs=pairs, max_drop=max_drop, force=force,
                             tile=parse_tile(tile), scale=parse_scale(scale), count=tiles)
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    ui.table(f"skinseg quantize -> {res['file']}", ["measure", "value"],
             [["target", res["target"]], ["calibration tiles", res["calibration_tiles"]],
              ["gate images", res["gate_images"]], ["FP32 Jaccard", fmt(res["fp32_jaccard"])],
              ["INT8 Jaccard", fmt(res["int8_jaccard"])], ["loss (points)", f"{res['drop_points']:.2f}"],
              ["mask agreement with FP32 (Jaccard)", fmt(res["agreement"])],
              ["size MB", f"{res['file'].stat().st_size / 1e6:.2f}"]], right=(1,))


@app.command()
@command
def doctor() -> None:
    """Versions, ONNX Runtime providers, CUDA/cuDNN libraries and CPU features of this machine."""
    from rich.table import Table

    from skinseg import ui
    from skinseg.inference.doctor import problems, report

    rep = report()
    table = Table(title="skinseg doctor", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    for k, v in rep.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {'yes' if b is True else 'no' if b is False or b is None else b}"
                          for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(v) or "none"
        table.add_row(k, str(v))
    ui.out.print(table)
    for p in problems(rep):
        ui.warn(p)


# ---------------------------------------------------------------------------------------------
# training side: init-config, check-data, train
# ---------------------------------------------------------------------------------------------
@app.command("init-config")
@command
def init_config(
    path: Annotated[Path, typer.Argument(help="Where to write the template.")] = Path("config.ini"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented config template with every key and its default."""
    from skinseg import ui
    from skinseg.shared import files
    from skinseg.shared.config import template
    from skinseg.shared.errors import SkinsegError

    if path.exists() and not force:
        raise SkinsegError(f"{path} exists; use --force to overwrite it")
    files.write_text(path, template())
    ui.out.print(f"wrote {path}; edit \\[train] image_datapath / mask_datapath, then: skinseg train {path}")


@app.command("check-data")
@command
def check_data(
    root: Annotated[Path, typer.Argument(help="Dataset folder (train|valid|test/images|masks, or one folder), or "
                                              "a config: checks the splits it names.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
) -> None:
    """Check a dataset: pairs, unreadable files, size mismatches, non-binary or empty masks, leaks."""
    from rich.markup import escape

    from skinseg import ui
    from skinseg.shared.checkdata import check_split, config_splits, discover, duplicate_ids
    from skinseg.shared.errors import SkinsegError

    if root.is_file():
        from skinseg.shared.config import load_config

        splits = config_splits(load_config(root, ui.warn))
        if not splits:
            raise SkinsegError(f"{root}: names no data; set [train] image_datapath (and [eval], [test])")
    elif root.is_dir():
        splits = discover(root)
    else:
        raise SkinsegError(f"{root}: no such folder or config file")
    reports = []
    with ui.progress(transient=True, disable=quiet) as bar:
        for name, dirs in splits:
            task = bar.add_task(f"checking {name}", total=None)
            reports.append(check_split(name, dirs.images, dirs.masks, on_item=lambda t=task: bar.advance(t)))
    ui.table(f"skinseg check-data: {root}", ["split", "pairs ok", "unusable", "notes", "images", "masks"],
             [[r.name, r.usable, len(r.problems), len(r.notes), r.images_dir, r.masks_dir] for r in reports])
    for r in reports:
        for file, why in r.problems:
            ui.out.print(f"[red]unusable[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
        for file, why in r.notes:
            ui.out.print(f"[yellow]note[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
    leaks = duplicate_ids(reports)
    for key, where in leaks:
        ui.out.print(f"[red]duplicate id[/] {escape(key)} in {', '.join(where)}")
    usable = sum(r.usable for r in reports)
    bad = sum(len(r.problems) for r in reports) + len(leaks)
    if usable == 0:
        raise SkinsegError(f"{root}: no usable image/mask pairs: training could not proceed")
    ui.out.print(f"{usable} usable pairs, {bad} problems")
    raise typer.Exit(1 if bad else 0)


@app.command()
@command
def train(
    config: Annotated[Path | None, typer.Argument(help="INI config (skinseg init-config writes one).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue a run folder from last.keras.")] = None,
    preview_augmentations: Annotated[int, typer.Option("--preview-augmentations",
                                                       help="Write a grid of N augmented pairs and exit.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Override \\[train] epochs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train DeepLabV3+ from a seed-style INI config; writes runs/train/<name>/.

    [dim]Examples:[/]
      skinseg train config.ini
      skinseg train --resume runs/train/isic-mnv2
    """
    from skinseg.training.trainer import train as run_train

    run_train(config, resume, preview_augmentations, quiet, epochs)


@app.command()
@command
def export(
    source: Annotated[Path, typer.Argument(help="A run folder (uses best.keras) or a .keras file.")],
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="FP32 .onnx path (default: RUN/model.onnx); "
                                                "variants go beside it as -fp16/-int8.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write an FP16 variant.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write a static QDQ INT8 variant.")] = False,
    calibration: Annotated[Path | None, typer.Option(help="Images for INT8 calibration "
                                                          "(default: the run's training images).")] = None,
    valid: Annotated[Path | None, typer.Option(help="Validation split for Jaccard checks "
                                                    "(default: the run's \\[eval] data).")] = None,
    max_drop: Annotated[float, typer.Option(help="Largest INT8 validation Jaccard loss, in points.")] = 0.5,
    force: Annotated[bool, typer.Option("--force", help="Keep an INT8 model that exceeds --max-drop.")] = False,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify with onnxslim "
                                           "(pip install onnxslim).")] = False,
    target: Annotated[str, typer.Option(help="INT8 target: cpu | tensorrt (see skinseg quantize).")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Export a trained model to a verified, self-describing ONNX file (and FP16/INT8 variants).

    [dim]Examples:[/]
      skinseg export runs/train/isic-mnv2 --opset 17
      skinseg export runs/train/isic-mnv2/best.keras --int8 --calibration dataset/train/images -o edge/model-int8.onnx
    """
    from skinseg.training.export import export as run_export

    run_export(source, opset, output, fp16, int8, calibration, valid, max_drop, force, simplify, quiet=quiet,
               target=target)


def main() -> None:
    app(prog_name="skinseg")


if __name__ == "__main__":
    sys.exit(main())
