"""The batch run as a library: images in, masks, overlays, results.csv and run.json out.

`BatchRun` owns the output folder's contract: one lock per folder (and shard), a journal that survives
a kill, `--resume` that keeps only what the same model and pixel options made, atomic files, and
run.json. Who segments the images is its executor's business (`LocalPipeline`: read-ahead and
write-behind threads in this process; `runner.ray_pool.RayPool`: actors on a cluster), composed, not
subclassed. The CLI's `skinseg infer` only parses and prints.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from skinseg import ui
from skinseg.inference.review import needs_review
from skinseg.inference.segmenter import Segmenter
from skinseg.runner.encodings import check_overlay_max
from skinseg.runner.jobs import Job, RunSummary, failure
from skinseg.runner.local import LocalPipeline
from skinseg.runner.measurements import check_spacing, in_millimetres
from skinseg.runner.result import FIGURES, Result
from skinseg.shared import files, system
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.files import shown
from skinseg.shared.images import binarize, read_mask

COLUMNS = ["file", "status", *(f for f in FIGURES if f != "seconds"), "seconds", "mask", "overlay", "seg", "sr",
           "error"]
OUTPUT_FOLDERS = ("masks", "overlays", "seg", "sr")


class Executor(Protocol):
    """Who segments a run's images: each finished image becomes a row in `summary` (and the journal)."""

    def process(self, run: BatchRun, todo: list[Job], summary: RunSummary, progress: Any) -> None: ...

    def info(self) -> dict[str, Any]: ...


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


class BatchRun:
    """One run over a list of images into one output folder (`executor`: who segments them; default:
    this process, with read-ahead and write-behind threads)."""

    def __init__(self, seg: Segmenter, output: Path, *, shard: tuple[int, int] | None = None,
                 resume: bool = False, overlay_max: int | None = None, options: dict[str, Any] | None = None,
                 executor: Executor | None = None, pixel_spacing: float | None = None,
                 store: Any = None):
        check_overlay_max(overlay_max)
        self.seg, self.out, self.resume = seg, Path(output), resume
        self.shard, self.overlay_max = shard, overlay_max
        self.options = options or {}
        self.executor = executor or LocalPipeline()
        self.pixel_spacing = check_spacing(pixel_spacing)
        self.store = store  # with a DICOM source: called with each SEG before it is written (a PACS's STOW-RS)
        suffix = f"-{shard[0]}-of-{shard[1]}" if shard else ""
        self.results_path = self.out / f"results{suffix}.csv"
        self.journal_path = self.out / f".results{suffix}.partial.csv"
        self.run_json = self.out / f"run{suffix}.json"
        self.lock_path = self.out / f".skinseg{suffix}.lock"

    # -- outputs ---------------------------------------------------------------------------------
    def write_outputs(self, job: Job, result: Result) -> None:
        """The image's files; a DICOM input also gets its SEG, and its SR when the scale is known (stored
        first when the run stores to a PACS, so a failed store leaves the image to redo, not half done)."""
        dicom = {}
        if result.dicom_source is not None:
            dicom = result.dicom_files(self.seg.model_path.name, self.seg.sha256)
            if self.store is not None:
                for data in dicom.values():
                    self.store(data, job)
        files.write_bytes(job.mask_path(self.out), result.png)
        files.write_bytes(job.overlay_path(self.out), result.overlay_jpeg(self.overlay_max))
        for kind, data in dicom.items():
            path = job.seg_path(self.out) if kind == "seg" else job.sr_path(self.out)
            files.ensure_writable_dir(path.parent)
            files.write_bytes(path, data)

    def row(self, job: Job, **values: Any) -> dict[str, Any]:
        row = dict.fromkeys(COLUMNS, "")
        row.update(file=shown(job.path), mask=str(job.mask_path(self.out).relative_to(self.out)),
                   overlay=str(job.overlay_path(self.out).relative_to(self.out)),
                   seg=str(job.seg_path(self.out).relative_to(self.out)) if job.is_dicom else "")
        if job.is_dicom and values.get("status") == "ok" and values.get("area_mm2") not in (None, ""):
            row["sr"] = str(job.sr_path(self.out).relative_to(self.out))
        row.update(values)
        return row

    def journal(self, row: dict[str, Any]) -> None:
        new = not self.journal_path.exists()
        with files.open_nofollow(self.journal_path) as fh:
            w = csv.DictWriter(fh, COLUMNS)
            if new:
                w.writeheader()
            w.writerow(files.csv_safe(row))

    def _complete(self, job: Job) -> bool:
        return job.mask_path(self.out).is_file() and job.overlay_path(self.out).is_file() and (
            not job.is_dicom or job.seg_path(self.out).is_file())

    def _resumed_row(self, job: Job, previous: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """The row of an output an earlier run completed; None when that output is damaged (redo it)."""
        row = previous.get(shown(job.path))
        if row and row.get("status") == "ok" and row.get("diameter_px") not in (None, ""):
            with contextlib.suppress(TypeError, ValueError):  # millimetres and review follow this run's options
                spacing = self.pixel_spacing  # (a DICOM input's own scale wins, as it did when it was made)
                if job.is_dicom and row.get("pixel_spacing_mm"):
                    spacing = float(row["pixel_spacing_mm"])
                area, diameter = in_millimetres(int(row["lesion_area_px"]), float(row["diameter_px"]), spacing)
                flag = needs_review(float(row["confidence"]), self.seg.review_threshold)
                return row | {"pixel_spacing_mm": "" if spacing is None else spacing,
                              "area_mm2": "" if area is None else area,
                              "diameter_mm": "" if diameter is None else diameter, "review": "yes" if flag else "no"}
        try:  # outputs are complete: recompute the stats
            mask = binarize(read_mask(job.mask_path(self.out)))
        except InputError as exc:
            ui.warn(f"{shown(job.mask_path(self.out))}: damaged ({exc}); redoing {shown(job.path)}")
            return None
        return self.row(job, status="ok", **Result.from_mask(mask, self.pixel_spacing).row(), error="")

    def fingerprint(self) -> dict[str, Any]:
        return self.seg.fingerprint()

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
        unknown = [k for k in now if k not in before]
        if unknown:
            raise SkinsegError(f"--resume: the outputs in {self.out} were made by an older skinseg that did not record "
                               f"{', '.join(unknown)}; write to a new -o folder")
        changed = [k for k in now if before.get(k) != now[k]]
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
        } | self.executor.info()
        if summary:
            info.update(ok=len(summary.rows) - len(summary.failed), failed=len(summary.failed),
                        flagged_for_review=sum(r.get("review") == "yes" for r in summary.rows),
                        skipped=summary.skipped, seconds=round(summary.seconds, 2))
        files.write_json(self.run_json, info)

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
        for sub in OUTPUT_FOLDERS[:2]:  # seg/ only when a DICOM input needs it
            files.ensure_writable_dir(self.out / sub)

        with system.sigterm_as_interrupt(), self._locked():
            return self._run(jobs, early_errors, progress)

    def _run(self, jobs: list[Job], early_errors: list[tuple[str, str]] | None, progress: Any) -> RunSummary:
        t0 = time.perf_counter()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        self._sweep_parts()
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
            self.journal(row)
        todo = []
        for job in jobs:
            row = self._resumed_row(job, previous) if self.resume and self._complete(job) else None
            if row is None:
                todo.append(job)
                continue
            summary.rows.append(row)
            summary.skipped += 1
            self.journal(row)
        if progress:
            progress.start(len(jobs), summary.skipped)
        try:
            self.executor.process(self, todo, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
            self._count_finished(todo, summary)
        self._sweep_parts()  # a worker killed in this run (Ray restarts it) leaves its half-written file
        summary.seconds = time.perf_counter() - t0
        order = {shown(j.path): i for i, j in enumerate(jobs)}
        summary.rows.sort(key=lambda r: order.get(r["file"], -1))
        files.write_csv(self.results_path, COLUMNS, summary.rows)
        self.journal_path.unlink(missing_ok=True)
        self._write_run_json("interrupted" if summary.interrupted else "finished", started, summary, len(jobs))
        return summary

    def _sweep_parts(self) -> None:
        """Remove temporary `.part` files: left by a killed run or worker, never a finished output. Only
        while no writer is at work (before the run, and after the executor has joined its writers)."""
        for sub in OUTPUT_FOLDERS:
            for stale in (self.out / sub).glob(".*.part"):
                stale.unlink(missing_ok=True)

    def _count_finished(self, todo: list[Job], summary: RunSummary) -> None:
        """After Ctrl-C, images whose outputs are complete on disk but not yet in the rows (a worker
        wrote them as the run stopped) get their rows: the count and results.csv match the disk."""
        listed = {r["file"] for r in summary.rows}
        for job in todo:
            if shown(job.path) not in listed and self._complete(job):
                row = self._resumed_row(job, {})
                if row is not None:
                    summary.rows.append(row)
                    self.journal(row)

    def process_one(self, job: Job) -> dict[str, Any]:
        """One image start to finish, in this thread: its row (an error row for a bad input). Model and
        flag errors raise. Ray workers call this."""
        t = time.perf_counter()
        try:
            loaded = self.seg.load(job.path)
            result = Result.from_prediction(self.seg.predict(loaded), loaded, job.path, self.pixel_spacing,
                                            self.seg.review_threshold)
            self.write_outputs(job, result)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop an archive run
            return self.row(job, status="error", error=failure(exc), mask="", overlay="", seg="")
        result.seconds = time.perf_counter() - t
        return self.row(job, status="ok", **result.row(), error="")
