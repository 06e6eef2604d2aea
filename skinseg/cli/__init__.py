"""The `skinseg` command line: flags in, one call into skinseg/commands (or training) out.

Heavy modules are imported inside commands, so `skinseg --help` starts fast and never imports
TensorFlow; the engine's flags are declared once, in cli/flags.py.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from skinseg import __version__
from skinseg.cli.flags import ModelOpt, ProviderOpt, engine_flags

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
# inference side: infer, eval, bench, quantize, doctor (engine flags from cli/flags.py)
# ---------------------------------------------------------------------------------------------
@app.command()
@command
@engine_flags
def infer(
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files, folders or globs.",
                                                       show_default=False)] = None,
    model: ModelOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output folder (default: a fresh "
                                                "runs/infer/run-N).")] = None,
    provider: ProviderOpt = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Finish the run in -o: skip inputs whose outputs the "
                                         "same model and options completed.")] = False,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Add to a non-empty -o folder.")] = False,
    shard: Annotated[str | None, typer.Option(help="K/N: process the K-th of N slices of the inputs.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    overlay_max: Annotated[int | None, typer.Option(help="Long side of overlay JPEGs in px (0 = full size); "
                                                     "decodes JPEGs again when the model's decode is smaller. "
                                                     "Default: the model's decode, at most 2048.")] = None,
    pixel_spacing: Annotated[float | None, typer.Option(help="Millimetres per pixel of the images, when known: adds "
                                                             "area_mm2 and diameter_mm (never guessed).")] = None,
    config: Annotated[Path | None, typer.Option(help="Seed-style config: inputs and options from its "
                                                     "\\[infer] and \\[mask] sections, the model trained from it; "
                                                     "flags win.")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="Run on Ray: 'local' (a Ray instance on this machine "
                                            "for the run), 'auto', HOST:6379 or ray://HOST:10001 (needs the "
                                            "\\[ray] extra).")] = None,
    workers: Annotated[int, typer.Option(help="With --ray: model actors (0 = one per CPU socket's cores, or one "
                                              "per GPU).")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(help="With --ray: GPUs per actor (e.g. 1, or 0.5 to share "
                                                        "one).")] = 0.0,
    dicomweb: Annotated[str | None, typer.Option(help="A PACS's DICOMweb root (e.g. http://pacs:8042/dicom-web): "
                                                      "segment the images of --study from it (needs the \\[dicom] "
                                                      "extra). Token: $SKINSEG_DICOMWEB_TOKEN.",
                                                 rich_help_panel="DICOM")] = None,
    study: Annotated[str | None, typer.Option(help="With --dicomweb: the Study Instance UID.",
                                              rich_help_panel="DICOM")] = None,
    series: Annotated[str | None, typer.Option(help="With --dicomweb: only this Series Instance UID.",
                                               rich_help_panel="DICOM")] = None,
    store: Annotated[bool, typer.Option("--store", help="With --dicomweb: send each DICOM SEG back to the study "
                                        "(STOW-RS).", rich_help_panel="DICOM")] = False,
    dicomweb_token_file: Annotated[Path | None, typer.Option(help="With --dicomweb: a file whose first line is the "
                                                                  "bearer token.", rich_help_panel="DICOM")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
    engine: Any = None,
) -> None:
    """Segment lesions in images: writes masks/, overlays/, results.csv and run.json (and seg/ for DICOM).

    [dim]Examples:[/]
      skinseg infer ./images --provider cuda
      skinseg infer photo.jpg scans/ --model model.onnx --output out/ --tta
      skinseg infer --dicomweb http://pacs:8042/dicom-web --study 1.2.3.4 --store -o out/
    """
    from skinseg.commands.infer import run_infer

    raise typer.Exit(run_infer(inputs, model, output, provider, engine, resume=resume, exist_ok=exist_ok,
                               shard=shard, recursive=recursive, overlay_max=overlay_max, config=config, ray=ray,
                               workers=workers, gpus_per_worker=gpus_per_worker, pixel_spacing=pixel_spacing,
                               quiet=quiet, dicomweb=dicomweb, study=study, series=series, store=store,
                               token_file=dicomweb_token_file))


@app.command("eval")
@command
@engine_flags
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
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Write predicted masks.")] = False,
    worst: Annotated[int, typer.Option(help="Images in the worst.png gallery.")] = 12,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
    engine: Any = None,
) -> None:
    """Score models on a test split with ISIC metrics at the masks' resolution, with infer's engine flags.

    Writes metrics.csv, summary.json, worst.png, jaccard_hist.png, threshold_sweep.png and risk_coverage.png.

    [dim]Examples:[/]
      skinseg eval config.ini
      skinseg eval --images test/images --masks test/masks --model fp32.onnx --model int8.onnx
    """
    from skinseg.commands.eval import run_eval

    raise typer.Exit(run_eval(config, model, images, masks, output, provider, engine, exist_ok=exist_ok,
                              save_masks=save_masks, worst=worst, quiet=quiet))


@app.command("review-threshold")
@command
@engine_flags
def review_threshold(
    config: Annotated[Path | None, typer.Argument(help="Seed-style config: decides on its \\[eval] split with the "
                                                       "model trained from it.")] = None,
    model: ModelOpt = None,
    images: Annotated[Path | None, typer.Option(help="Images with expert masks (or a split folder with images/ "
                                                     "and masks/).")] = None,
    masks: Annotated[Path | None, typer.Option(help="Their masks (default: masks/ beside images/).")] = None,
    max_flagged: Annotated[float, typer.Option(help="Flag at most this share of these images (0.15 = 15 %), the "
                                                    "least confident first.")] = 0.15,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write a copy of the model that records "
                                                "the threshold (default: only report it).")] = None,
    provider: ProviderOpt = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    engine: Any = None,
) -> None:
    """Decide a model's review threshold on images with masks, e.g. a clinic's own validation set.

    [dim]Examples:[/]
      skinseg review-threshold --model model.onnx --images valid/images --masks valid/masks -o model-clinic.onnx
      skinseg review-threshold config.ini --max-flagged 0.10
    """
    from skinseg.commands.review_threshold import run_review_threshold

    raise typer.Exit(run_review_threshold(model, config, images, masks, max_flagged, output, provider, engine,
                                          quiet=quiet))


@app.command()
@command
@engine_flags
def bench(
    model: ModelOpt = None,
    provider: ProviderOpt = "auto",
    image: Annotated[Path | None, typer.Option(help="Image to time, or with --stages a folder of them "
                                                    "(default: synthetic).")] = None,
    size: Annotated[str, typer.Option(help="Synthetic image WxH.")] = "4288x2848",
    repeat: Annotated[int, typer.Option(help="Timed repetitions (median reported).")] = 3,
    stages: Annotated[bool, typer.Option("--stages", help="Time per image by stage of infer's path (decode, "
                                         "model, post-processing, outputs) and each stage's share.")] = False,
    overlay_max: Annotated[int | None, typer.Option(help="With --stages: overlay long side, as infer's.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Per-tile time of the model (default: both shipped "
                                          "precisions) under every CPU-side provider, graph level and precision "
                                          "available here.")] = False,
    engine: Any = None,
) -> None:
    """Time the engine as infer runs it: per-tile latency, megapixels/s, time by stage (--stages).

    [dim]Examples:[/]
      skinseg bench --stages --image my-images/
      skinseg bench --model fp32 --size 4288x2848
      skinseg bench --compare                        # FP32 vs INT8 vs providers on this CPU
    """
    from skinseg.commands.bench import run

    run(model, provider, engine, image, size, repeat, stages, overlay_max, compare)


@app.command()
@command
@engine_flags
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
    max_disagreement: Annotated[float | None, typer.Option(help="Largest points of mask disagreement with FP32 "
                                                                "(with masks too; default 3).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Keep an INT8 model that fails the gate.")] = False,
    tiles: Annotated[int, typer.Option(help="Calibration tiles.")] = 64,
    engine: Any = None,
) -> None:
    """Quantize an ONNX model to static INT8 (QDQ), gated against the FP32 model.

    [dim]Examples:[/]
      skinseg quantize model.onnx --calibration dataset/train/images --images dataset/valid
      skinseg quantize model.onnx --calibration dataset/train/images --target tensorrt
    """
    from skinseg.commands.quantize import run

    run(model, calibration, output, target, images, masks, max_drop, force, engine, tiles, max_disagreement)


@app.command()
@command
@engine_flags
def serve(
    model: ModelOpt = None,
    provider: ProviderOpt = "auto",
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs an API key.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free port, printed at start).")] = 8000,
    workers: Annotated[int, typer.Option(help="Engine threads running images at once.")] = 2,
    queue: Annotated[int, typer.Option(help="Requests that may wait for a worker; beyond: 503 with "
                                            "Retry-After.")] = 16,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MB (413 above).")] = 50.0,
    max_pixels: Annotated[int | None, typer.Option(help="Largest image in pixels, refused from its header (413 "
                                                        "above); default 40000000.")] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="File holding the API key clients send as "
                                                           "Authorization: Bearer (or SKINSEG_API_KEY).")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Serve beyond loopback without "
                                                   "a key (a warning is printed).")] = False,
    cors: Annotated[list[str] | None, typer.Option(help="Allow browser pages from this origin (repeatable); "
                                                        "off by default; '*' needs an API key.")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help="Another Host name clients use (repeatable); "
                                                                "loopback, --host and this machine's names are "
                                                                "always allowed; '*' needs an API key.")] = None,
    max_connections: Annotated[int, typer.Option(help="Open connections at most; beyond, a 503 and close.")] = 256,
    client_timeout: Annotated[float, typer.Option(help="Seconds a client may take to send its headers, or stay "
                                                       "silent in the middle of an upload.")] = 10.0,
    save: Annotated[Path | None, typer.Option(help="Keep every segmented upload in this folder (by request id); "
                                                   "off by default.")] = None,
    overlay_max: Annotated[int | None, typer.Option(help="Overlay long side in px, as infer's.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No request log lines.")] = False,
    engine: Any = None,
) -> None:
    """Serve the engine over HTTP with a web page: POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics.

    [dim]Examples:[/]
      skinseg serve                                  # http://127.0.0.1:8000/
      SKINSEG_API_KEY=... skinseg serve --host 0.0.0.0 --workers 2
    """
    from skinseg.commands.serve import run_serve

    raise typer.Exit(run_serve(model, provider, engine, host=host, port=port, workers=workers, queue=queue,
                               max_upload_mb=max_upload_mb, max_pixels=max_pixels, api_key_file=api_key_file,
                               insecure_no_auth=insecure_no_auth, cors=cors, allowed_host=allowed_host, save=save,
                               overlay_max=overlay_max, max_connections=max_connections,
                               client_timeout=client_timeout, quiet=quiet))


@app.command()
@command
def convert(
    model: Annotated[Path, typer.Argument(help="ONNX model with a fixed tile (skinseg export writes one), or fp32 / "
                                               "int8 for a shipped one (written to the current folder).")],
    to: Annotated[str, typer.Option("--to", help="Target format: ort (ONNX Runtime Mobile, for phones).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file (default: beside the model, "
                                                "MODEL.ort).")] = None,
) -> None:
    """Convert a model for another runtime, parity-checked against the source, metadata kept.

    [dim]Examples:[/]
      skinseg convert skinseg/models/skinseg-fp32.onnx --to ort -o phone/skinseg.ort
      skinseg convert int8 --to ort                  # ./skinseg-int8.ort
    """
    from skinseg.commands.convert import run

    run(model, to, output)


@app.command()
@command
def doctor() -> None:
    """Versions, ONNX Runtime providers, CUDA/cuDNN libraries and CPU features of this machine."""
    from skinseg.commands.doctor import show

    show()


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

    if path.is_dir():
        raise SkinsegError(f"{path} is a folder; give a file name, e.g. {path / 'config.ini'}")
    if path.exists() and not force:
        raise SkinsegError(f"{path} exists; use --force to overwrite it")
    files.ensure_writable_dir(path.parent)  # creates a missing folder; a read-only one is one clear line
    files.write_text(path, template())
    ui.out.print(f"wrote {ui.escape(str(path))}; edit \\[train] image_datapath / mask_datapath, then run:",
                 soft_wrap=True)
    ui.out.print(f"  skinseg train {ui.escape(str(path))}", soft_wrap=True)  # one line, never wrapped mid-command


@app.command("check-data")
@command
def check_data(
    root: Annotated[Path, typer.Argument(help="Dataset folder (train|valid|test/images|masks, or one folder), or "
                                              "a config: checks the splits it names.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
) -> None:
    """Check a dataset: pairs, unreadable files, size mismatches, non-binary or empty masks, leaks."""
    from skinseg.commands.check_data import run

    raise typer.Exit(run(root, quiet))


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
    max_disagreement: Annotated[float, typer.Option(help="Largest INT8 mask disagreement with FP32, in Jaccard "
                                                         "points.")] = 3.0,
    max_flagged: Annotated[float, typer.Option(help="Review threshold: flag at most this share of the validation "
                                                    "images for a person to check (0.15 = 15 %).")] = 0.15,
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
               max_disagreement=max_disagreement, target=target, max_flagged=max_flagged)


def main() -> None:
    app(prog_name="skinseg")


if __name__ == "__main__":
    sys.exit(main())
