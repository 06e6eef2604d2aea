"""`skinseg infer`: run the engine over many images, writing masks, overlays, results and provenance.

Decoding of the next image and writing of the previous one happen in background threads while the
model runs; every file is written atomically; `resume` finishes only what the same model and options
started; one lock per output folder (and shard) keeps two runs from mixing their outputs.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import shlex
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import ui
from skinseg.inference.options import EngineOptions
from skinseg.inference.postprocess import mask_stats
from skinseg.inference.segmenter import Prediction, Segmenter
from skinseg.inference.tiling import count_tiles
from skinseg.shared import files, system
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.files import shown
from skinseg.shared.images import LoadedImage, binarize, encode, load_image, read_mask
from skinseg.shared.render import display_size, overlay_at
from skinseg.shared.scale import working_size

COLUMNS = ["file", "status", "width", "height", "lesion_area_px", "lesion_fraction", "bbox", "components",
           "tiles", "seconds", "mask", "overlay", "error"]
# What must match for --resume to keep an earlier output (the rest, e.g. threads, changes no pixel).
FINGERPRINT_KEYS = ("sha256", "tile", "scale", "resize", "overlap", "sigma_scale", "tta", "postprocess")


AUTO_OVERLAY_MAX = 2048  # the long-side cap of an overlay drawn from the pixels already decoded
AUTO_OVERLAY_MIN = 768  # and its floor: a 1/8 decode (324 px for 2592) is enlarged so the outline, drawn
# from the full-size mask, shows its detail; enlarging costs a few ms, a second decode costs the first's


def overlay_jpeg(source: Path | bytes | bytearray, loaded: LoadedImage, mask: np.ndarray,
                 long_side: int | None = None) -> bytes:
    """The overlay JPEG of an image (its path or bytes). `long_side` None (default): drawn on the pixels
    the model's decode already holds (decode once), 768-2048 px on the long side (never above the
    image's own size); N: at most N px (0 = full size), decoding the JPEG again at the reduction that
    size needs when the model's decode is smaller."""
    rgb = loaded.rgb
    if long_side is None:
        side = min(max(max(rgb.shape[:2]), AUTO_OVERLAY_MIN), AUTO_OVERLAY_MAX)
        return encode(".jpg", overlay_at(rgb, mask, display_size(mask.shape, side)))
    size = display_size(mask.shape, long_side)
    if max(rgb.shape[:2]) < max(size) and loaded.reduce > 1:
        rgb = load_image(source, max(size)).rgb
    return encode(".jpg", overlay_at(rgb, mask, size))


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


def prediction_figures(pred: Prediction) -> dict[str, Any]:
    """What a results row (and a service's answer) says about one image's prediction."""
    return {"width": pred.width, "height": pred.height, **mask_stats(pred.mask, pred.box, pred.components),
            "tiles": pred.tiles}


def failure(exc: Exception) -> str:
    """The error-row reason for one image that failed; model and flag errors (exit code 2) are raised
    instead: they would fail every image, so they end the run once."""
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, SkinsegError) and exc.exit_code == 2:
        raise exc
    if isinstance(exc, OSError):  # reading is checked by the image reader: this is a write
        return f"cannot write outputs: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass
class Job:
    """One input image and where its outputs go."""

    path: Path
    name: str  # output stem, unique within the run (case-insensitively)

    def mask_path(self, out: Path) -> Path:
        return out / "masks" / f"{self.name}.png"

    def overlay_path(self, out: Path) -> Path:
        return out / "overlays" / f"{self.name}.jpg"


@dataclass
class RunSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'K/N' (1-based K) -> (K, N)."""
    if not value:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError as exc:
        raise SkinsegError(f"--shard {value!r}: expected K/N, e.g. 1/4 for the first of four slices") from exc
    if not (n >= 1 and 1 <= k <= n):
        raise SkinsegError(f"--shard {value!r}: K must be between 1 and N")
    return k, n


def plan_jobs(images: list[Path], shard: tuple[int, int] | None = None) -> list[Job]:
    """Output names from input stems only, unique case-insensitively whatever the inputs are called
    (a repeated stem gets ~2, ~3..., skipping names another input already has), then the shard.

    Names are assigned before sharding, so every machine of a sharded run agrees on them.
    """
    jobs = [Job(p, name) for p, name in zip(images, files.unique_stems(images), strict=True)]
    if shard:
        k, n = shard
        jobs = [j for i, j in enumerate(jobs) if i % n == k - 1]
    return jobs


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier results file, keyed by file; a torn last line (killed run) is dropped, a
    damaged file is ignored with a warning (its images are checked or redone)."""
    if not path.is_file():
        return {}
    rows = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("file") and row.get("status") and None not in row and row.get("error") is not None:
                    rows[row["file"]] = row
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        ui.warn(f"{path}: damaged ({type(exc).__name__}); rebuilding it from the outputs")
        return {}
    return rows


class InferRun:
    """One `skinseg infer` run over a list of images into one output folder."""

    def __init__(self, seg: Segmenter, output: Path, *, shard: tuple[int, int] | None = None,
                 resume: bool = False, overlay_max: int | None = None, options: dict[str, Any] | None = None):
        if overlay_max is not None and overlay_max < 0:
            raise SkinsegError(f"overlay_max {overlay_max}: must be 0 (full size) or a long side in px")
        self.seg, self.out, self.resume = seg, Path(output), resume
        self.shard, self.overlay_max = shard, overlay_max
        self.options = options or {}
        suffix = f"-{shard[0]}-of-{shard[1]}" if shard else ""
        self.results_path = self.out / f"results{suffix}.csv"
        self.journal_path = self.out / f".results{suffix}.partial.csv"
        self.run_json = self.out / f"run{suffix}.json"
        self.lock_path = self.out / f".skinseg{suffix}.lock"

    # -- outputs ---------------------------------------------------------------------------------
    def _write_outputs(self, job: Job, loaded: LoadedImage, mask: np.ndarray) -> None:
        files.write_bytes(job.mask_path(self.out), encode(".png", mask))
        files.write_bytes(job.overlay_path(self.out), overlay_jpeg(job.path, loaded, mask, self.overlay_max))

    def _row(self, job: Job, **values: Any) -> dict[str, Any]:
        row = dict.fromkeys(COLUMNS, "")
        row.update(file=shown(job.path), mask=str(job.mask_path(self.out).relative_to(self.out)),
                   overlay=str(job.overlay_path(self.out).relative_to(self.out)))
        row.update(values)
        return row

    def _journal(self, row: dict[str, Any]) -> None:
        new = not self.journal_path.exists()
        with files.open_nofollow(self.journal_path) as fh:
            w = csv.DictWriter(fh, COLUMNS)
            if new:
                w.writeheader()
            w.writerow(files.csv_safe(row))

    def _complete(self, job: Job) -> bool:
        return job.mask_path(self.out).is_file() and job.overlay_path(self.out).is_file()

    def _resumed_row(self, job: Job, previous: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """The row of an output an earlier run completed; None when that output is damaged (redo it)."""
        row = previous.get(shown(job.path))
        if row and row.get("status") == "ok":
            return row
        try:  # outputs are complete: recompute the stats
            mask = binarize(read_mask(job.mask_path(self.out)))
        except InputError as exc:
            ui.warn(f"{shown(job.mask_path(self.out))}: damaged ({exc}); redoing {shown(job.path)}")
            return None
        return self._row(job, status="ok", width=mask.shape[1], height=mask.shape[0], **mask_stats(mask),
                         seconds="", error="")

    def fingerprint(self) -> dict[str, Any]:
        d = self.seg.describe()
        return {k: d[k] for k in FINGERPRINT_KEYS}

    def _check_resumable(self) -> None:
        """--resume keeps only what the same model and options made; anything else is refused."""
        if not self.run_json.is_file():
            return
        try:
            before = json.loads(self.run_json.read_text(encoding="utf-8")).get("fingerprint")
        except (ValueError, UnicodeDecodeError, OSError):
            ui.warn(f"{self.run_json}: damaged; its outputs are kept only if complete")
            return
        now = self.fingerprint()
        if before is None:
            return
        changed = [k for k in FINGERPRINT_KEYS if before.get(k) != now.get(k)]
        if changed:
            what = ", ".join("model" if k == "sha256" else k for k in changed)
            raise SkinsegError(f"--resume: the outputs in {self.out} were made with another {what}; resume with the "
                               "same model and options, or write to a new -o folder")

    def _write_run_json(self, status: str, started: str, summary: RunSummary | None, total: int) -> None:
        info = {
            "status": status,
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if summary else None,
            "command": [shown(a) for a in sys.argv],
            "engine": self.seg.describe(),
            "fingerprint": self.fingerprint(),
            "options": self.options,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "inputs": total,
            "versions": system.versions(),
        } | self.extra_run_info()
        if summary:
            info.update(ok=len(summary.rows) - len(summary.failed), failed=len(summary.failed),
                        skipped=summary.skipped, seconds=round(summary.seconds, 2))
        files.write_json(self.run_json, info)

    def extra_run_info(self) -> dict[str, Any]:
        """More for run.json (the distributed run adds its cluster)."""
        return {}

    def resume_command(self) -> str:
        args = [a for a in sys.argv[1:] if a != "--resume"]
        has_out = any(a in ("-o", "--output") or a.startswith("--output=") for a in args)
        return shlex.join(["skinseg", *args, *([] if has_out else ["-o", str(self.out)]), "--resume"])

    @contextlib.contextmanager
    def _locked(self):
        """One run per output folder (and shard) at a time: a second one fails at once. The lock file is
        removed when the run ends (while still held, and a run that locked a file already removed this
        way tries again), so no empty `.skinseg.lock` stays behind."""
        for _ in range(5):
            fh = files.open_nofollow(self.lock_path, "a+")  # held for the whole run
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise SkinsegError(f"another skinseg run is writing to {self.out}; wait for it or choose another "
                                   "-o") from None
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()  # the run before removed it between our open and our lock
        else:
            raise SkinsegError(f"could not take the lock in {self.out}; retry")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            fh.close()

    # -- the run ---------------------------------------------------------------------------------
    def run(self, jobs: list[Job], early_errors: list[tuple[str, str]] | None = None,
            progress: Any = None) -> RunSummary:
        """Process `jobs`; `early_errors` are (input, reason) pairs found while collecting inputs."""
        for sub in ("masks", "overlays"):
            files.ensure_writable_dir(self.out / sub)

        with system.sigterm_as_interrupt(), self._locked():
            return self._run(jobs, early_errors, progress)

    def _run(self, jobs: list[Job], early_errors: list[tuple[str, str]] | None, progress: Any) -> RunSummary:
        t0 = time.perf_counter()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        for sub in ("masks", "overlays"):
            for stale in (self.out / sub).glob(".*.part"):  # left by a killed run: never a finished output
                stale.unlink(missing_ok=True)
        previous = {}
        if self.resume:
            self._check_resumable()
            previous = _read_rows(self.results_path) | _read_rows(self.journal_path)
        self.journal_path.unlink(missing_ok=True)
        self._write_run_json("running", started, None, len(jobs))
        summary = RunSummary()
        for raw, reason in early_errors or []:
            row = dict.fromkeys(COLUMNS, "") | {"file": shown(raw), "status": "error", "error": reason}
            summary.rows.append(row)
            self._journal(row)
        todo = []
        for job in jobs:
            row = self._resumed_row(job, previous) if self.resume and self._complete(job) else None
            if row is None:
                todo.append(job)
                continue
            summary.rows.append(row)
            summary.skipped += 1
            self._journal(row)
        if progress:
            progress.start(len(jobs), summary.skipped)
        try:
            self._process(todo, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
            self._count_finished(todo, summary)
        summary.seconds = time.perf_counter() - t0
        order = {shown(j.path): i for i, j in enumerate(jobs)}
        summary.rows.sort(key=lambda r: order.get(r["file"], -1))
        files.write_csv(self.results_path, COLUMNS, summary.rows)
        self.journal_path.unlink(missing_ok=True)
        self._write_run_json("interrupted" if summary.interrupted else "finished", started, summary, len(jobs))
        return summary

    def _count_finished(self, todo: list[Job], summary: RunSummary) -> None:
        """After Ctrl-C, images whose outputs are complete on disk but not yet in the rows (a worker
        wrote them as the run stopped) get their rows: the count and results.csv match the disk."""
        listed = {r["file"] for r in summary.rows}
        for job in todo:
            if shown(job.path) not in listed and self._complete(job):
                row = self._resumed_row(job, {})
                if row is not None:
                    summary.rows.append(row)
                    self._journal(row)

    def process_one(self, job: Job) -> dict[str, Any]:
        """One image start to finish, in this thread: its row (an error row for a bad input). Model and
        flag errors raise. Ray workers (commands/infer_ray.py) call this."""
        t = time.perf_counter()
        try:
            loaded = self.seg.load(job.path)
            pred = self.seg.predict(loaded)
            self._write_outputs(job, loaded, pred.mask)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop an archive run
            return self._row(job, status="error", error=failure(exc), mask="", overlay="")
        return self._row(job, status="ok", **prediction_figures(pred), seconds=round(time.perf_counter() - t, 3),
                         error="")

    def _process(self, todo: list[Job], summary: RunSummary, progress: Any) -> None:
        with ThreadPoolExecutor(1, "skinseg-read") as reader, ThreadPoolExecutor(1, "skinseg-write") as writer:
            ahead: deque[tuple[Job, Future]] = deque()
            writes: deque[tuple[Future, dict[str, Any]]] = deque()
            queue = iter(todo)

            def refill() -> None:
                while len(ahead) < 2:
                    job = next(queue, None)
                    if job is None:
                        return
                    ahead.append((job, reader.submit(self.seg.load, job.path)))

            def error_row(job: Job, message: str) -> None:
                row = self._row(job, status="error", error=message, mask="", overlay="")
                summary.rows.append(row)
                self._journal(row)
                if progress:
                    progress.done(ok=False)

            def finish_write() -> None:
                fut, row = writes.popleft()
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. this image's outputs cannot be written
                    row.update(status="error", error=failure(exc), mask="", overlay="")
                    self._journal(row)

            try:
                refill()
                while ahead:
                    job, fut = ahead.popleft()
                    refill()
                    t = time.perf_counter()
                    try:
                        loaded = fut.result()
                        if progress:
                            progress.image(shown(job.path.name), self.seg.count_tiles(loaded.height, loaded.width))
                        pred = self.seg.predict(loaded, on_batch=progress.tiles if progress else None)
                    except Exception as exc:  # noqa: BLE001 - one bad input must not stop an archive run
                        error_row(job, failure(exc))
                        continue
                    row = self._row(job, status="ok", **prediction_figures(pred), error="")

                    def write(job=job, loaded=loaded, mask=pred.mask, row=row, t=t) -> None:
                        self._write_outputs(job, loaded, mask)
                        row["seconds"] = round(time.perf_counter() - t, 3)
                        self._journal(row)

                    while len(writes) >= 2:
                        finish_write()
                    writes.append((writer.submit(write), row))
                    summary.rows.append(row)
                    if progress:
                        progress.done(ok=True)
            finally:
                for _, fut in ahead:
                    fut.cancel()
                while writes:  # finished images are kept, also on Ctrl-C
                    finish_write()

    def table(self, summary: RunSummary) -> None:
        from rich.text import Text

        ok = [r for r in summary.rows if r["status"] == "ok"]
        rows = []
        for r in summary.rows[:15]:
            size = f"{r['width']}x{r['height']}" if r["width"] else ""
            frac = f"{float(r['lesion_fraction']) * 100:.1f}" if r["lesion_fraction"] not in ("", None) else ""
            status = Text("ok", style="green") if r["status"] == "ok" else Text(r["error"][:60], style="red")
            rows.append([Path(r["file"]).name, size, frac, r["components"], status])
        more = f"... {len(summary.rows) - 15} more in {self.results_path}" if len(summary.rows) > 15 else None
        ui.table("skinseg infer", ["image", "size", "lesion %", "components", "status"], rows, caption=more)
        rate = len(ok) / summary.seconds if summary.seconds else 0
        ui.out.print(f"[bold]{len(ok)}[/] ok, [bold]{len(summary.failed)}[/] failed, {summary.skipped} resumed, "
                     f"{summary.seconds:.1f} s ({rate:.2f} img/s)")
        for label, path in (("masks", self.out / "masks"), ("overlays", self.out / "overlays"),
                            ("results", self.results_path), ("run", self.run_json)):
            ui.out.print(f"{label:<8} {ui.escape(shown(path))}")


def run_infer(inputs: list[str] | None, model: Path | None, output: Path | None, provider: str,
              engine: EngineOptions, *, resume: bool = False, exist_ok: bool = False, shard: str | None = None,
              recursive: bool = False, overlay_max: int | None = None, config: Path | None = None,
              ray: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0, quiet: bool = False) -> int:
    """The command: inputs and options (a config's [infer]/[mask] under the flags) -> outputs; the exit code."""
    from skinseg.inference.model_files import choose_model
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.runfolder import check_apart, output_folder

    if config is not None:
        from skinseg.shared.config import infer_defaults

        defaults = infer_defaults(config)
        inputs, output = inputs or defaults["inputs"], output or defaults["output"]
        engine = engine.with_(threshold=defaults["threshold"] if engine.threshold is None else engine.threshold,
                              blur=defaults["blur"] if engine.blur is None else engine.blur)
    if not inputs:
        raise SkinsegError("no inputs: give image files, folders or globs (skinseg infer --help)")
    if overlay_max is not None and overlay_max < 0:
        raise SkinsegError(f"--overlay-max {overlay_max}: must be 0 (full size) or a long side in px")
    if workers < 0 or not (math.isfinite(gpus_per_worker) and gpus_per_worker >= 0):
        raise SkinsegError(f"--workers {workers} / --gpus-per-worker {gpus_per_worker}: must be 0 or more")
    if not ray and (workers or gpus_per_worker):
        raise SkinsegError("--workers and --gpus-per-worker need --ray ADDRESS (e.g. --ray local)")
    shard_kn = parse_shard(shard)
    model_path = choose_model(model, config, provider)
    if resume and output is None:
        raise SkinsegError("--resume needs -o OUT: the output folder of the run to finish")
    if output is not None:
        check_apart(output, inputs)  # before anything is read or written
    images, missing = collect_images(inputs, recursive, exclude=[output] if output else [])
    if not images:
        raise SkinsegError(f"no images found in {' '.join(map(str, inputs))}: " + "; ".join(missing))
    jobs = plan_jobs(images, shard_kn)
    seg = Segmenter(model_path, provider, engine)
    if ray:
        from skinseg.commands.infer_ray import reachable

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
    out = output_folder(output, "infer", resume=resume, exist_ok=exist_ok or shard_kn is not None)  # apart: above
    if not quiet:
        d = seg.describe()
        ui.info(f"[bold]skinseg infer[/] {len(jobs)} images -> {ui.escape(str(out))}")
        ui.info(f"  model {ui.escape(d['model'])} ({d['spec']['input']}, tile {d['tile']}, scale {d['scale']})")
        ui.info(f"  providers {', '.join(seg.providers)}" + ("  (auto)" if provider == "auto" else ""))
    options = {"inputs": list(map(str, inputs)), "recursive": recursive, "provider": provider, "ray": ray,
               "engine": engine.as_dict()}
    if ray:
        from skinseg.commands.infer_ray import RayInferRun

        run: InferRun = RayInferRun(seg, out, address=ray, workers=workers, gpus_per_worker=gpus_per_worker,
                                    provider=provider, shard=shard_kn, resume=resume, overlay_max=overlay_max,
                                    options=options)
    else:
        run = InferRun(seg, out, shard=shard_kn, resume=resume, overlay_max=overlay_max, options=options)
    with ui.ImageTileProgress(quiet) as bar:
        summary = run.run(jobs, [(m.split(":")[0], m) for m in missing], bar)
    if summary.interrupted:
        ui.warn(f"interrupted: {len(summary.rows)} of {len(jobs)} images done, written to {run.results_path}; "
                f"finish with: {run.resume_command()}")
        return 130
    if not quiet:
        run.table(summary)
    else:  # -q keeps the one line that says where the results are
        ui.out.print(f"results in {ui.escape(str(out))} ({len(summary.rows) - len(summary.failed)} ok, "
                     f"{len(summary.failed)} failed)", soft_wrap=True)
    return 1 if summary.failed else 0
