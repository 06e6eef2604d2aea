"""`skinseg infer`: the command. It parses, checks the inputs and the model before anything is written,
and prints; the run itself (threads, lock, journal, resume, run.json, Ray) is `runner.batch.BatchRun`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.inference.tiling import count_tiles
from skinseg.runner.batch import BatchRun
from skinseg.runner.encodings import check_overlay_max
from skinseg.runner.jobs import Job, RunSummary, parse_shard, plan_jobs
from skinseg.runner.measurements import check_spacing
from skinseg.runner.models import provider_notes
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.files import shown
from skinseg.shared.scale import working_size


def first_size(jobs: list[Job]) -> tuple[Job, tuple[int, int]] | None:
    """The first input whose header gives its size, and (width, height): read from the header only."""
    from skinseg.shared.images import max_pixels, probe_size

    for job in jobs[:20]:
        try:
            with open(job.path, "rb") as fh:
                size = probe_size(fh.read(1 << 20))
        except OSError:
            continue
        if size and size[0] * size[1] <= max_pixels():  # too large: that image's error row, later
            return job, size
    return None


def warn_scale(seg: Segmenter, job: Job, size: tuple[int, int]) -> None:
    """A working scale more than 2x from the model's own costs tiles (time) and gives masks unlike the
    ones it was trained for: say so with the figures of one input, once, before the run."""
    own, used = seg.spec.scale, seg.scale
    if not own or (used is not None and 0.5 <= used / own <= 2):
        return
    w, h = size
    tiles, usual = seg.count_tiles(h, w), count_tiles(*working_size(h, w, own), seg.tile, seg.overlap)
    seconds = tiles * seg.adapter.latency_ms(runs=3) / 1000 * (4 if seg.tta else 1)
    ui.warn(f"--scale {used or 'native'}: this model works at {own} px; {job.path.name} ({w}x{h}) becomes {tiles} "
            f"tiles instead of {usual} (about {seconds:.0f} s per image here) and masks unlike those it was trained "
            f"for. Leave --scale out to use the model's own, or keep --scale to run it as asked.")


def table(run: BatchRun, summary: RunSummary) -> None:
    """The console table of a finished run and where its files are."""
    from rich.text import Text

    ok = [r for r in summary.rows if r["status"] == "ok"]
    rows = []
    for r in summary.rows[:15]:
        size = f"{r['width']}x{r['height']}" if r["width"] else ""
        frac = f"{float(r['lesion_fraction']) * 100:.1f}" if r["lesion_fraction"] not in ("", None) else ""
        status = Text("ok", style="green") if r["status"] == "ok" else Text(r["error"], style="red")
        check = Text("check this outline", style="bold yellow") if r.get("review") == "yes" else Text("")
        rows.append([Path(r["file"]).name, size, frac, r["components"], check, status])
    more = f"... {len(summary.rows) - 15} more in {run.results_path}" if len(summary.rows) > 15 else None
    ui.table("skinseg infer", ["image", "size", "lesion %", "components", "review", "status"], rows, caption=more)
    rate = len(ok) / summary.seconds if summary.seconds else 0
    flagged = sum(r.get("review") == "yes" for r in ok)
    if flagged:
        ui.out.print(f"[bold yellow]{flagged}[/] of {len(ok)} masks flagged for review (low confidence): check them "
                     "before use (results.csv: review, confidence)", soft_wrap=True)
    ui.out.print(f"[bold]{len(ok)}[/] ok, [bold]{len(summary.failed)}[/] failed, {summary.skipped} resumed, "
                 f"{summary.seconds:.1f} s ({rate:.2f} img/s)")
    segs = [("seg", run.out / "seg")] if (run.out / "seg").is_dir() else []
    for label, path in (("masks", run.out / "masks"), ("overlays", run.out / "overlays"), *segs,
                        ("results", run.results_path), ("run", run.run_json)):
        ui.out.print(f"{label:<8} {ui.escape(shown(path))}")



def check_dicomweb(inputs: list[str] | None, dicomweb: str | None, study: str | None, series: str | None,
                   store: bool, token_file: Path | None, ray: str | None) -> Any:
    """The PACS a --dicomweb run reads (None without --dicomweb); the flags that go with it, checked."""
    if dicomweb is None:
        for flag, given in (("--study", study), ("--series", series), ("--store", store),
                            ("--dicomweb-token-file", token_file)):
            if given:
                raise SkinsegError(f"{flag} needs --dicomweb URL (the PACS's DICOMweb root)")
        return None
    if inputs:
        raise SkinsegError("give either image files and folders or --dicomweb URL --study UID, not both")
    if not study:
        raise SkinsegError("--dicomweb needs --study UID: the study whose images to segment")
    if ray:
        raise SkinsegError("--dicomweb runs in this process; leave out --ray")
    from skinseg.runner.dicomweb import Pacs, read_token

    return Pacs(dicomweb, read_token(token_file))


def run_infer(inputs: list[str] | None, model: Path | None, output: Path | None, provider: str,
              engine: EngineOptions, *, resume: bool = False, exist_ok: bool = False, shard: str | None = None,
              recursive: bool = False, overlay_max: int | None = None, config: Path | None = None,
              ray: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0,
              pixel_spacing: float | None = None, quiet: bool = False, dicomweb: str | None = None,
              study: str | None = None, series: str | None = None, store: bool = False,
              token_file: Path | None = None) -> int:
    """The command: inputs and options (a config's [infer]/[mask] under the flags) -> outputs; the exit code."""
    from skinseg.runner.models import choose_model, config_engine
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.runfolder import check_apart, output_folder

    if config is not None:
        from skinseg.shared.config import infer_defaults

        defaults = infer_defaults(config)
        inputs, output = inputs or defaults["inputs"], output or defaults["output"]
        engine = config_engine(config, engine)
    pacs = check_dicomweb(inputs, dicomweb, study, series, store, token_file, ray)
    if not inputs and pacs is None:
        raise SkinsegError("no inputs: give image files, folders or globs, or --dicomweb URL --study UID "
                           "(skinseg infer --help)")
    check_overlay_max(overlay_max)
    check_spacing(pixel_spacing)
    if workers < 0 or not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
        raise SkinsegError(f"--workers {workers} / --gpus-per-worker {gpus_per_worker}: must be 0 or more")
    if not ray and (workers or gpus_per_worker):
        raise SkinsegError("--workers and --gpus-per-worker need --ray ADDRESS (e.g. --ray local)")
    shard_kn = parse_shard(shard)
    model_path = choose_model(model, config, provider)
    if resume and output is None:
        raise SkinsegError("--resume needs -o OUT: the output folder of the run to finish")
    seg = Segmenter(model_path, provider, engine)
    if pacs is not None:  # the study's images, fetched into the run's folder: then a run like any other
        found, skipped = pacs.instances(study, series)  # a PACS that does not answer: before any folder exists
        out = output_folder(output, "infer", resume=resume, exist_ok=exist_ok or shard_kn is not None)
        images, fetch_errors = pacs.fetch_all(study, found, out / "dicom")
        missing = [f"{sop}: {why}" for sop, why in fetch_errors]
        for kind, count in skipped.items():
            ui.info(f"left out {count} {kind} of the study (results, not images)")
        inputs = [f"{dicomweb} study {study}" + (f" series {series}" if series else "")]
        if not images and not missing:
            raise SkinsegError(f"--study {study}: no image instances to segment in it")
    else:
        if output is not None:
            check_apart(output, inputs)  # before anything is read or written
        images, missing = collect_images(inputs, recursive, exclude=[output] if output else [])
        if not images:
            raise SkinsegError(f"no images found in {' '.join(map(str, inputs))}: " + "; ".join(missing))
    jobs = plan_jobs(images, shard_kn)
    if ray:
        from skinseg.runner.ray_pool import reachable

        reachable(ray)  # an address that does not answer is refused before anything is written
    first = first_size(jobs)
    if first is not None:
        (w, h) = first[1]
        try:
            seg.check_tiles(h, w)
        except InputError as exc:  # on the first image: a scale or overlap typo, refused before any output
            raise SkinsegError(str(exc)) from None
        if not quiet:
            warn_scale(seg, *first)
    # only now, when the inputs and the model are known good, does the run get a folder
    if pacs is None:
        out = output_folder(output, "infer", resume=resume, exist_ok=exist_ok or shard_kn is not None)  # apart: above
    if not quiet:
        d = seg.describe()
        ui.info(f"[bold]skinseg infer[/] {len(jobs)} images -> {ui.escape(str(out))}")
        ui.info(f"  model {ui.escape(d['model'])} ({d['spec']['input']}, tile {d['tile']}, scale {d['scale']})")
        ui.info(f"  providers {', '.join(seg.providers)}" + ("  (auto)" if provider == "auto" else ""))
        for line in provider_notes(seg):
            ui.info(f"  {ui.escape(line)}")
    options = {"inputs": list(map(str, inputs)), "recursive": recursive, "provider": provider, "ray": ray,
               "pixel_spacing_mm": pixel_spacing, "engine": engine.as_dict(), "dicomweb": dicomweb, "study": study,
               "series": series, "store": store}
    executor = None
    if ray:
        from skinseg.runner.ray_pool import RayPool

        executor = RayPool(ray, workers=workers, gpus_per_worker=gpus_per_worker, provider=provider)
    run = BatchRun(seg, out, shard=shard_kn, resume=resume, overlay_max=overlay_max, options=options,
                   executor=executor, pixel_spacing=pixel_spacing,
                   store=(lambda seg_file, job: pacs.store(seg_file)) if store and pacs is not None else None)
    with ui.ImageTileProgress(quiet) as bar:
        summary = run.run(jobs, [(m.split(":")[0], m) for m in missing], bar)
    if summary.interrupted:
        ui.warn(f"interrupted: {len(summary.rows)} of {len(jobs)} images done, written to {run.results_path}; "
                f"finish with: {run.resume_command()}")
        return 130
    if not quiet:
        table(run, summary)
    else:  # -q keeps the one line that says where the results are
        ui.out.print(f"results in {ui.escape(str(out))} ({len(summary.rows) - len(summary.failed)} ok, "
                     f"{len(summary.failed)} failed)", soft_wrap=True)
    return 1 if summary.failed else 0
