"""The `skinseg` command line. Heavy modules are imported inside commands, so `skinseg --help`
starts fast and never imports TensorFlow."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from skinseg import __version__

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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder.")] = None,
    provider: ProviderOpt = "auto",
    scale: Annotated[str | None, typer.Option(help="Working scale: long side in px, or 'native'. "
                                                   "Default: the model's.")] = None,
    tile: Annotated[str | None, typer.Option(help="Tile N or HxW (dynamic-size models only).")] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap fraction.")] = 0.5,
    batch: Annotated[int, typer.Option(help="Tiles per session run (0 = auto from tile size and device).")] = 0,
    threshold: Annotated[float | None, typer.Option(help="Lesion probability threshold "
                                                         "(default: the model's, else 0.5).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Flip test-time augmentation (4x slower).")] = False,
    keep: Annotated[str | None, typer.Option(help="largest | all: connected components to keep.")] = None,
    min_area: Annotated[int | None, typer.Option(help="With --keep all: smallest component kept (px).")] = None,
    fill_holes: Annotated[bool | None, typer.Option("--fill-holes/--no-fill-holes")] = None,
    blur: Annotated[float | None, typer.Option(help="Gaussian sigma (px) on the probability before "
                                                    "thresholding; 0 = off.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip inputs whose outputs are complete.")] = False,
    shard: Annotated[str | None, typer.Option(help="K/N: process the K-th of N slices of the inputs.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overlay_max: Annotated[int, typer.Option(help="Long side of overlay JPEGs in px (0 = full size).")] = 2048,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0 = all cores).")] = 0,
    graph_opt: Annotated[str, typer.Option(help="ONNX Runtime graph optimisation: disable | basic | extended | "
                                                "all.")] = "all",
    config: Annotated[Path | None, typer.Option(help="Seed-style config: inputs and options from its "
                                                     "[infer] and [mask] sections; flags win.")] = None,
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
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.errors import SkinsegError

    post: dict[str, Any] = {"keep": keep, "min_area": min_area, "fill_holes": fill_holes, "blur": blur}
    if config is not None:
        from skinseg.shared.config import infer_defaults

        defaults = infer_defaults(config)
        inputs = inputs or defaults["inputs"]
        output = output or defaults["output"]
        for k in ("blur", "threshold"):
            if defaults.get(k) is not None:
                if k == "threshold" and threshold is None:
                    threshold = defaults[k]
                elif k == "blur" and blur is None:
                    post["blur"] = defaults[k]
    if not inputs:
        raise SkinsegError("no inputs: give image files, folders or globs (skinseg infer --help)")
    output = output or Path("skinseg-out")
    shard_kn = parse_shard(shard)
    images, missing = collect_images(inputs, recursive)
    if not images:
        raise SkinsegError(f"no images found in {' '.join(map(str, inputs))}: " + "; ".join(missing))
    jobs = plan_jobs(images, shard_kn)
    seg = Segmenter(model, provider, tile=tile, scale=scale, overlap=overlap, batch=batch, tta=tta,
                    threshold=threshold, post=post, threads=threads, graph_opt=graph_opt)
    if not quiet:
        d = seg.describe()
        ui.info(f"[bold]skinseg infer[/] {len(jobs)} images -> {output}")
        ui.info(f"  model {d['model']} ({d['spec']['input']}, tile {d['tile']}, scale {d['scale']})")
        ui.info(f"  providers {', '.join(seg.providers)}" + ("  (auto)" if provider == "auto" else ""))
    run = InferRun(seg, output, shard=shard_kn, resume=resume, overlay_max=overlay_max,
                   options={"inputs": list(map(str, inputs)), "recursive": recursive, "provider": provider,
                            "threshold": threshold, "scale": scale, "tile": tile})
    with ui.ImageTileProgress(quiet) as bar:
        summary = run.run(jobs, [(m.split(":")[0], m) for m in missing], bar)
    failed = summary.failed
    if not quiet:
        _infer_table(summary, run)
    raise typer.Exit(1 if failed else 0)


def _infer_table(summary: Any, run: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from skinseg import ui

    ok = [r for r in summary.rows if r["status"] == "ok"]
    table = Table(title="skinseg infer", show_lines=False)
    for col in ("image", "size", "lesion %", "components", "status"):
        table.add_column(col)
    for r in summary.rows[:15]:
        size = f"{r['width']}x{r['height']}" if r["width"] else ""
        frac = f"{float(r['lesion_fraction']) * 100:.1f}" if r["lesion_fraction"] not in ("", None) else ""
        status = "[green]ok[/]" if r["status"] == "ok" else f"[red]{escape(r['error'][:60])}[/]"
        table.add_row(Path(r["file"]).name, size, frac, str(r["components"]), status)
    if len(summary.rows) > 15:
        table.caption = f"... {len(summary.rows) - 15} more in {run.results_path}"
    ui.out.print(table)
    rate = len(ok) / summary.seconds if summary.seconds else 0
    ui.out.print(f"[bold]{len(ok)}[/] ok, [bold]{len(summary.failed)}[/] failed, {summary.skipped} resumed, "
                 f"{summary.seconds:.1f} s ({rate:.2f} img/s)")
    ui.out.print(f"masks    {run.out / 'masks'}\noverlays {run.out / 'overlays'}\n"
                 f"results  {run.results_path}\nrun      {run.run_json}")


@app.command("eval")
@command
def eval_(
    config: Annotated[Path | None, typer.Argument(help="Seed-style config: scores its [test] split.")] = None,
    model: Annotated[list[Path] | None, typer.Option("--model", "-m", help="ONNX model; repeat to compare "
                                                     "(default: the shipped model).")] = None,
    images: Annotated[Path | None, typer.Option(help="Test images folder.")] = None,
    masks: Annotated[Path | None, typer.Option(help="Test masks folder (default: beside images).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report folder.")] = Path("skinseg-eval"),
    provider: ProviderOpt = "auto",
    scale: Annotated[str | None, typer.Option(help="Working scale override (px or native).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Threshold override.")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Flip test-time augmentation.")] = False,
    keep: Annotated[str | None, typer.Option(help="largest | all.")] = None,
    fill_holes: Annotated[bool | None, typer.Option("--fill-holes/--no-fill-holes")] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Write predicted masks.")] = False,
    worst: Annotated[int, typer.Option(help="Images in the worst.png gallery.")] = 12,
    batch: Annotated[int, typer.Option(help="Tiles per session run (0 = auto from tile size and device).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Score models on a test split with ISIC metrics at the masks' resolution.

    Writes metrics.csv, summary.json, worst.png, jaccard_hist.png and threshold_sweep.png.

    [dim]Examples:[/]
      skinseg eval config.ini --model model.onnx
      skinseg eval --images test/images --masks test/masks --model fp32.onnx --model int8.onnx
    """
    from datetime import UTC, datetime

    from rich.table import Table

    from skinseg import ui
    from skinseg.evaluation.evaluate import evaluate_model, model_labels, pairs_for, write_reports
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared import atomic
    from skinseg.shared.dataset import find_pairs
    from skinseg.shared.errors import SkinsegError

    if images is None and config is not None:
        from skinseg.shared.config import load_config

        cfg = load_config(config, ui.warn)
        if not cfg.test.image_datapath:
            raise SkinsegError(f"{config}: [test] image_datapath is not set; or pass --images and --masks")
        images, masks = cfg.test.image_datapath, cfg.test.mask_datapath or cfg.test.image_datapath
    if images is None:
        raise SkinsegError("no test data: give a config with a [test] section, or --images DIR --masks DIR")
    if not Path(images).is_dir():
        raise SkinsegError(f"--images {images}: no such folder")
    if masks is None:
        images, masks = find_pairs(Path(images))
    elif not Path(masks).is_dir():
        raise SkinsegError(f"--masks {masks}: no such folder")
    pairs, problems = pairs_for(Path(images), Path(masks))
    if not pairs:
        raise SkinsegError(f"no image/mask pairs in {images} and {masks} (masks named <id>_segmentation.png?)")
    post = {"keep": keep, "fill_holes": fill_holes}
    segs = [Segmenter(m, provider, scale=scale, threshold=threshold, tta=tta, post=post, batch=batch)
            for m in (model or [None])]
    labels = model_labels([s.model_path for s in segs])
    atomic.ensure_writable_dir(output)
    mask_dir = None
    results = []
    with ui.progress(disable=quiet) as bar:
        for seg, label in zip(segs, labels, strict=True):
            if save_masks:
                mask_dir = atomic.ensure_writable_dir(output / "masks" / label.replace("/", "_"))
            task = bar.add_task(f"eval {label}", total=len(pairs))
            results.append(evaluate_model(seg, label, pairs, mask_dir, worst, lambda t=task: bar.advance(t)))
    meta = {"images": str(images), "masks": str(masks), "pairs": len(pairs),
            "unscored_inputs": [{"file": f, "reason": r} for f, r in problems],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "engine": {label: s.describe() for s, label in zip(segs, labels, strict=True)}}
    write_reports(results, output, meta)
    if not quiet:
        table = Table(title=f"skinseg eval: {len(pairs)} pairs from {images}")
        table.add_column("metric")
        for label in labels:
            table.add_column(label, justify="right")
        def cell(r, key):
            v = r.summary.get(key)
            return f"{v['mean']:.4f}" if isinstance(v, dict) else ("" if v is None else f"{v:.4f}")
        for key, name in (("jaccard", "mean Jaccard"), ("thresholded_jaccard", "thresholded Jaccard (ISIC 2018)"),
                          ("dice", "Dice"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
                          ("specificity", "specificity"), ("hd95", "HD95 px"), ("pooled_jaccard", "pooled Jaccard"),
                          ("failure_rate", "failures (J < 0.65)")):
            table.add_row(name, *[cell(r, key) for r in results])
        table.add_row("median Jaccard", *[f"{r.summary['jaccard']['median']:.4f}" if "jaccard" in r.summary else ""
                                          for r in results])
        table.add_row("best threshold", *[
            f"{r.summary['best_threshold']['threshold']:.2f} ({r.summary['best_threshold']['mean_jaccard']:.4f})"
            if "best_threshold" in r.summary else "" for r in results])
        table.add_row("scored / errors", *[f"{len(r.ok)} / {r.summary['errors']}" for r in results])
        ui.out.print(table)
        for f, why in problems[:10]:
            ui.warn(f"not scored: {f}: {why}")
        ui.out.print(f"reports in {output}: metrics.csv summary.json worst.png jaccard_hist.png threshold_sweep.png")
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
    scale: Annotated[str, typer.Option(help="Working scale (px or native).")] = "native",
    tile: Annotated[str | None, typer.Option(help="Tile N or HxW (dynamic-size models).")] = None,
    overlap: Annotated[float, typer.Option(help="Tile overlap fraction.")] = 0.5,
    repeat: Annotated[int, typer.Option(help="Timed repetitions (median reported).")] = 3,
    threads: Annotated[int, typer.Option(help="Intra-op threads (0 = all cores).")] = 0,
) -> None:
    """Time the engine: per-tile latency, megapixels/s, and overhead against bare session.run."""
    from rich.table import Table

    from skinseg import ui
    from skinseg.inference.bench import run_bench
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared.errors import SkinsegError

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SkinsegError(f"--size {size!r}: expected WxH, e.g. 4288x2848") from None
    seg = Segmenter(model, provider, tile=tile, scale=scale, overlap=overlap, batch=batch, threads=threads)
    with ui.console.status("benchmarking..."):
        res = run_bench(seg, str(image) if image else None, (h, w), repeat)
    table = Table(title=f"skinseg bench: {seg.model_path.name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in res.items():
        table.add_row(k, str(v))
    ui.out.print(table)


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
    from skinseg.shared import atomic
    from skinseg.shared.config import template
    from skinseg.shared.errors import SkinsegError

    if path.exists() and not force:
        raise SkinsegError(f"{path} exists; use --force to overwrite it")
    atomic.write_text(path, template())
    ui.out.print(f"wrote {path}; edit [train] image_datapath / mask_datapath, then: skinseg train {path}")


@app.command("check-data")
@command
def check_data(
    root: Annotated[Path, typer.Argument(help="Dataset folder: train|valid|test/images|masks, or one folder.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Check a dataset: pairs, unreadable files, size mismatches, non-binary or empty masks, leaks."""
    from rich.markup import escape
    from rich.table import Table

    from skinseg import ui
    from skinseg.shared.checkdata import check_split, discover, duplicate_ids
    from skinseg.shared.errors import SkinsegError

    if not root.is_dir():
        raise SkinsegError(f"{root}: no such folder")
    reports = []
    with ui.progress(transient=True, disable=quiet) as bar:
        for name, images, masks in discover(root):
            task = bar.add_task(f"checking {name}", total=None)
            reports.append(check_split(name, images, masks, on_item=lambda t=task: bar.advance(t)))
    table = Table(title=f"skinseg check-data: {root}")
    for col in ("split", "pairs ok", "unusable", "notes", "images", "masks"):
        table.add_column(col)
    for r in reports:
        table.add_row(r.name, str(r.usable), str(len(r.problems)), str(len(r.notes)), str(r.images_dir),
                      str(r.masks_dir))
    ui.out.print(table)
    for r in reports:
        for file, why in r.problems:
            ui.out.print(f"[red]unusable[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
        for file, why in r.notes:
            ui.out.print(f"[yellow]note[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
    leaks = duplicate_ids(reports)
    for key, where in leaks:
        ui.out.print(f"[red]duplicate id[/] {key} in {', '.join(where)}")
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
    epochs: Annotated[int | None, typer.Option(help="Override [train] epochs.")] = None,
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
                                                    "(default: the run's [eval] data).")] = None,
    max_drop: Annotated[float, typer.Option(help="Largest INT8 validation Jaccard loss, in points.")] = 0.5,
    force: Annotated[bool, typer.Option("--force", help="Keep an INT8 model that exceeds --max-drop.")] = False,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify with onnxslim.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Export a trained model to a verified, self-describing ONNX file (and FP16/INT8 variants).

    [dim]Examples:[/]
      skinseg export runs/train/isic-mnv2 --opset 17
      skinseg export runs/train/isic-mnv2/best.keras --int8 --calibration dataset/train/images -o edge/model-int8.onnx
    """
    from skinseg.export import export as run_export

    run_export(source, opset, output, fp16, int8, calibration, valid, max_drop, force, simplify, quiet=quiet)


def main() -> None:
    app(prog_name="skinseg")


if __name__ == "__main__":
    sys.exit(main())
