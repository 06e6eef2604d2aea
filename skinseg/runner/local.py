"""The local executor of a batch run: the next image is decoded and the previous one written in
background threads while the model runs on this one (the model is the bottleneck; nothing waits on
the disk)."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from skinseg.runner.jobs import Job, RunSummary, failure
from skinseg.runner.result import Result
from skinseg.shared.files import shown

if TYPE_CHECKING:
    from skinseg.runner.batch import BatchRun


class LocalPipeline:
    """Segments a run's images in this process."""

    def info(self) -> dict[str, Any]:
        return {}

    def process(self, run: BatchRun, todo: list[Job], summary: RunSummary, progress: Any) -> None:
        with ThreadPoolExecutor(1, "skinseg-read") as reader, ThreadPoolExecutor(1, "skinseg-write") as writer:
            ahead: deque[tuple[Job, Future]] = deque()
            writes: deque[tuple[Future, dict[str, Any]]] = deque()
            queue = iter(todo)

            def refill() -> None:
                while len(ahead) < 2:
                    job = next(queue, None)
                    if job is None:
                        return
                    ahead.append((job, reader.submit(run.seg.load, job.path)))

            def error_row(job: Job, message: str) -> None:
                row = run.row(job, status="error", error=message, mask="", overlay="", seg="")
                summary.rows.append(row)
                run.journal(row)
                if progress:
                    progress.done(ok=False)

            def finish_write() -> None:
                fut, row = writes.popleft()
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. this image's outputs cannot be written
                    row.update(status="error", error=failure(exc), mask="", overlay="", seg="", sr="")
                    run.journal(row)

            try:
                refill()
                while ahead:
                    job, fut = ahead.popleft()
                    refill()
                    t = time.perf_counter()
                    try:
                        loaded = fut.result()
                        if progress:
                            progress.image(shown(job.path.name), run.seg.count_tiles(loaded.height, loaded.width))
                        pred = run.seg.predict(loaded, on_batch=progress.tiles if progress else None)
                    except Exception as exc:  # noqa: BLE001 - one bad input must not stop an archive run
                        error_row(job, failure(exc))
                        continue
                    result = Result.from_prediction(pred, loaded, job.path, run.pixel_spacing,
                                                    run.seg.review_threshold)
                    row = run.row(job, status="ok", **result.row(), error="")

                    def write(job=job, result=result, row=row, t=t) -> None:
                        run.write_outputs(job, result)
                        row["seconds"] = round(time.perf_counter() - t, 3)
                        run.journal(row)

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

