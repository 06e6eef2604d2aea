"""`skinseg infer`: run the engine over many images, writing masks, overlays, results and provenance.

Decoding of the next image and writing of the previous one happen in background threads while the
model runs; every file is written atomically; `resume` skips inputs whose outputs are complete.
"""

from __future__ import annotations

import csv
import io
import platform
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skinseg import __version__
from skinseg.inference.postprocess import mask_stats
from skinseg.inference.render import overlay
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import atomic
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import binarize, encode, read_mask

COLUMNS = ["file", "status", "width", "height", "lesion_area_px", "lesion_fraction", "bbox", "components",
           "tiles", "seconds", "mask", "overlay", "error"]


@dataclass
class Job:
    """One input image and where its outputs go."""

    path: Path
    name: str  # output stem, unique within the run

    def mask_path(self, out: Path) -> Path:
        return out / "masks" / f"{self.name}.png"

    def overlay_path(self, out: Path) -> Path:
        return out / "overlays" / f"{self.name}.jpg"


@dataclass
class RunSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0

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
    """Output names from input stems only (unique: a repeated stem gets ~2, ~3...), then the shard.

    Names are assigned before sharding, so every machine of a sharded run agrees on them.
    """
    seen: dict[str, int] = {}
    jobs = []
    for p in images:
        stem = p.stem or "image"
        key = stem.lower()
        seen[key] = seen.get(key, 0) + 1
        jobs.append(Job(p, stem if seen[key] == 1 else f"{stem}~{seen[key]}"))
    if shard:
        k, n = shard
        jobs = [j for i, j in enumerate(jobs) if i % n == k - 1]
    return jobs


def _read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier results file, keyed by file; a torn last line (killed run) is dropped."""
    if not path.is_file():
        return {}
    rows = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("file") and row.get("status") and None not in row and row.get("error") is not None:
                rows[row["file"]] = row
    return rows


def versions() -> dict[str, str]:
    import onnxruntime as ort

    return {"skinseg": __version__, "python": platform.python_version(), "onnxruntime": ort.__version__,
            "numpy": np.__version__, "opencv": cv2.__version__, "platform": platform.platform()}


class InferRun:
    """One `skinseg infer` run over a list of images into one output folder."""

    def __init__(self, seg: Segmenter, output: Path, *, shard: tuple[int, int] | None = None,
                 resume: bool = False, overlay_max: int = 2048, options: dict[str, Any] | None = None):
        self.seg, self.out, self.resume = seg, Path(output), resume
        self.shard, self.overlay_max = shard, overlay_max
        self.options = options or {}
        suffix = f"-{shard[0]}-of-{shard[1]}" if shard else ""
        self.results_path = self.out / f"results{suffix}.csv"
        self.journal_path = self.out / f".results{suffix}.partial.csv"
        self.run_json = self.out / f"run{suffix}.json"

    # -- outputs ---------------------------------------------------------------------------------
    def _write_outputs(self, job: Job, rgb: np.ndarray, mask: np.ndarray) -> None:
        """The mask at full size; the overlay straight at its display size (never via a full-size copy)."""
        atomic.write_bytes(job.mask_path(self.out), encode(".png", mask))
        h, w = mask.shape
        s = min(1.0, self.overlay_max / max(h, w)) if self.overlay_max else 1.0
        oh, ow = max(1, round(h * s)), max(1, round(w * s))
        if rgb.shape[:2] != (oh, ow):
            shrink = rgb.shape[0] * rgb.shape[1] > oh * ow
            rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if mask.shape != (oh, ow):
            mask = cv2.resize(mask.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST).astype(bool)
        atomic.write_bytes(job.overlay_path(self.out), encode(".jpg", overlay(rgb, mask)))

    def _row(self, job: Job, **values: Any) -> dict[str, Any]:
        row = dict.fromkeys(COLUMNS, "")
        row.update(file=str(job.path), mask=str(job.mask_path(self.out).relative_to(self.out)),
                   overlay=str(job.overlay_path(self.out).relative_to(self.out)))
        row.update(values)
        return row

    def _journal(self, row: dict[str, Any]) -> None:
        new = not self.journal_path.exists()
        with open(self.journal_path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            if new:
                w.writeheader()
            w.writerow(row)

    def _complete(self, job: Job) -> bool:
        return job.mask_path(self.out).is_file() and job.overlay_path(self.out).is_file()

    def _resumed_row(self, job: Job, previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
        row = previous.get(str(job.path))
        if row and row.get("status") == "ok":
            return row
        mask = binarize(read_mask(job.mask_path(self.out)))  # outputs are complete: recompute stats
        return self._row(job, status="ok", width=mask.shape[1], height=mask.shape[0], **mask_stats(mask),
                         seconds="", error="")

    def _write_run_json(self, status: str, started: str, summary: RunSummary | None, total: int) -> None:
        info = {
            "status": status,
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if summary else None,
            "command": sys.argv,
            "engine": self.seg.describe(),
            "options": self.options,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "inputs": total,
            "versions": versions(),
        }
        if summary:
            info.update(ok=len(summary.rows) - len(summary.failed), failed=len(summary.failed),
                        skipped=summary.skipped, seconds=round(summary.seconds, 2))
        atomic.write_json(self.run_json, info)

    # -- the run ---------------------------------------------------------------------------------
    def run(self, jobs: list[Job], early_errors: list[tuple[str, str]] | None = None,
            progress: Any = None) -> RunSummary:
        """Process `jobs`; `early_errors` are (input, reason) pairs found while collecting inputs."""
        t0 = time.perf_counter()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        for sub in ("masks", "overlays"):
            atomic.ensure_writable_dir(self.out / sub)
            for stale in (self.out / sub).glob(".*.part"):  # left by a killed run: never a finished output
                stale.unlink(missing_ok=True)
        previous = {}
        if self.resume:
            previous = _read_rows(self.results_path) | _read_rows(self.journal_path)
        self.journal_path.unlink(missing_ok=True)
        self._write_run_json("running", started, None, len(jobs))
        summary = RunSummary()
        for raw, reason in early_errors or []:
            row = dict.fromkeys(COLUMNS, "") | {"file": raw, "status": "error", "error": reason}
            summary.rows.append(row)
            self._journal(row)
        todo = []
        for job in jobs:
            if self.resume and self._complete(job):
                row = self._resumed_row(job, previous)
                summary.rows.append(row)
                summary.skipped += 1
                self._journal(row)
            else:
                todo.append(job)
        if progress:
            progress.start(len(jobs), summary.skipped)
        with ThreadPoolExecutor(1, "skinseg-read") as reader, ThreadPoolExecutor(1, "skinseg-write") as writer:
            ahead: deque[tuple[Job, Future]] = deque()
            writes: deque[Future] = deque()
            queue = iter(todo)

            def refill() -> None:
                while len(ahead) < 2:
                    job = next(queue, None)
                    if job is None:
                        return
                    ahead.append((job, reader.submit(self.seg.load, job.path)))

            refill()
            while ahead:
                job, fut = ahead.popleft()
                refill()
                t = time.perf_counter()
                try:
                    loaded = fut.result()
                    if progress:
                        progress.image(job.path.name, self.seg.count_tiles(loaded.height, loaded.width))
                    pred = self.seg.predict(loaded, on_batch=progress.tiles if progress else None)
                except InputError as exc:
                    row = self._row(job, status="error", error=str(exc), mask="", overlay="")
                    summary.rows.append(row)
                    self._journal(row)
                    if progress:
                        progress.done(ok=False)
                    continue
                except Exception as exc:  # noqa: BLE001 - one bad input must not stop an archive run
                    if isinstance(exc, SkinsegError) and exc.exit_code == 2:
                        raise
                    row = self._row(job, status="error", error=f"{type(exc).__name__}: {exc}"[:500],
                                    mask="", overlay="")
                    summary.rows.append(row)
                    self._journal(row)
                    if progress:
                        progress.done(ok=False)
                    continue
                row = self._row(job, status="ok", width=pred.width, height=pred.height,
                                **mask_stats(pred.mask), tiles=pred.tiles, error="")

                def write(job=job, rgb=loaded.rgb, mask=pred.mask, row=row, t=t) -> None:
                    self._write_outputs(job, rgb, mask)
                    row["seconds"] = round(time.perf_counter() - t, 3)
                    self._journal(row)

                while len(writes) >= 2:
                    writes.popleft().result()
                writes.append(writer.submit(write))
                summary.rows.append(row)
                if progress:
                    progress.done(ok=True)
            for w in writes:
                w.result()
        summary.seconds = time.perf_counter() - t0
        order = {str(j.path): i for i, j in enumerate(jobs)}
        summary.rows.sort(key=lambda r: order.get(r["file"], -1))
        buf = io.StringIO()
        writer_csv = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
        writer_csv.writeheader()
        writer_csv.writerows(summary.rows)
        atomic.write_text(self.results_path, buf.getvalue())
        self.journal_path.unlink(missing_ok=True)
        self._write_run_json("finished", started, summary, len(jobs))
        return summary
