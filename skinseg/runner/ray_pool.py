"""The Ray executor of a batch run (`skinseg infer --ray ADDRESS`): a pool of Ray actors as the workers.

The driver plans the jobs (paths and output names only, never pixels), keeps the output contract
(lock, resume, results.csv, run.json, exit codes) and streams rows back. Each actor holds one loaded
model, reads its images, runs the engine and writes masks and overlays straight into the output
folder (local disk on a one-node cluster, a mount every node sees otherwise). A worker that dies is
restarted by Ray and its batch retried; the driver keeps one row per image. Plain actors with small
constructor arguments (sent inline, never through the object store) rather than Ray Data, whose own
actors log an error-level line on every run (ray-project/ray#57733) and whose start-up adds seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.runner.batch import BatchRun
from skinseg.runner.jobs import Job, RunSummary
from skinseg.shared.errors import SkinsegError, first_line
from skinseg.shared.install import install_hint

BATCH = 8  # images per actor call: a little faster than 1 (docs/benchmarks.md); a retry redoes at most 8


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise SkinsegError(f"--ray needs Ray: {install_hint('cpu,ray')}") from exc
    return ray


def reachable(address: str, seconds: float = 10.0) -> None:
    """A cluster address must answer within `seconds` (Ray itself retries for minutes)."""
    if address in ("local", "auto"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SkinsegError(f"--ray {address}: expected local, auto, HOST:6379 or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise SkinsegError(f"--ray {address}: no answer within {seconds:.0f} s ({exc.strerror or exc}); is the cluster "
                           "running (ray start --head) and the address right?") from None


def cpus_per_socket() -> int:
    """Cores of one CPU socket on this machine (the default worker's share of a node)."""
    sockets = {p.read_text().strip() for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/"
                                                                                   "physical_package_id")}
    return max(1, (os.cpu_count() or 1) // max(1, len(sockets)))


class SkinsegWorker:
    """One loaded model in a Ray actor: a batch of (path, output name) in, their results rows out."""

    def __init__(self, model: str, provider: str, engine: EngineOptions, output: str, overlay_max: int | None,
                 pixel_spacing: float | None = None) -> None:
        seg = Segmenter(model, provider, engine)
        self.run = BatchRun(seg, Path(output), overlay_max=overlay_max, pixel_spacing=pixel_spacing)
        self.info = {"pid": os.getpid(), "node": socket.gethostname(), "providers": seg.providers}

    def process(self, batch: list[tuple[bytes, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = [self.run.process_one(Job(Path(os.fsdecode(p)), n)) for p, n in batch]
        return rows, self.info


class RayPool:
    """Segments a run's images on a pool of Ray actors (one loaded model each) instead of this process."""

    def __init__(self, address: str, workers: int = 0, gpus_per_worker: float = 0, provider: str = "auto") -> None:
        self.address, self.workers, self.gpus = address, workers, gpus_per_worker
        self.provider = provider
        self.seen_workers: dict[int, dict[str, Any]] = {}
        self.cluster: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        return {"ray": {"address": self.address, "workers": self.workers, "gpus_per_worker": self.gpus,
                        "cluster": self.cluster,
                        "nodes": sorted({w["node"] for w in self.seen_workers.values()}),
                        "providers": sorted({p for w in self.seen_workers.values() for p in w["providers"][:1]}),
                        "worker_processes": len(self.seen_workers)}}

    def _connect(self) -> Any:
        ray = _ray()
        for name in ("ray",):  # the driver shows skinseg's progress; Ray's own lines are noise here
            logging.getLogger(name).setLevel(logging.ERROR)
        if not ray.is_initialized():
            reachable(self.address)
            try:
                if self.address == "local":
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # ray raises ConnectionError and its own types
                first = first_line(exc, 200)
                raise SkinsegError(f"--ray {self.address}: cannot connect ({first}); use 'local', 'auto' or "
                                   "HOST:6379 of a running cluster (ray start --head)") from exc
        res = ray.cluster_resources()
        self.cluster = {"cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0), "nodes": len(ray.nodes())}
        if not self.workers:
            if self.gpus and res.get("GPU"):
                self.workers = max(1, int(res["GPU"] // self.gpus))
            else:
                self.workers = max(1, int(res.get("CPU", 1) // cpus_per_socket()))
        if self.gpus and not res.get("GPU"):
            raise SkinsegError(f"--gpus-per-worker {self.gpus}: the cluster at {self.address} has no GPUs")
        return ray

    def process(self, run: BatchRun, todo: list[Job], summary: RunSummary, progress: Any) -> None:
        if not todo:
            return
        t0 = time.perf_counter()
        ray = self._connect()
        cpus = max(1.0, self.cluster["cpus"] / self.workers) if not self.gpus else 1.0
        engine = run.seg.options.with_(threads=run.seg.options.threads or int(cpus))
        actor = ray.remote(SkinsegWorker).options(num_cpus=cpus, num_gpus=self.gpus or 0, max_restarts=-1,
                                                  max_task_retries=-1)  # a dead worker: restarted, batch retried
        pool = [actor.remote(str(run.seg.model_path), self.provider, engine, str(run.out), run.overlay_max,
                             run.pixel_spacing)
                for _ in range(self.workers)]
        batches = [[(os.fsencode(str(j.path)), j.name) for j in todo[i : i + BATCH]]
                   for i in range(0, len(todo), BATCH)]
        pending: dict[Any, int] = {}  # task -> worker index
        done: set[str] = set()
        first: float | None = None
        try:
            for k in range(min(len(pool) * 2, len(batches))):  # two batches in flight per worker
                pending[pool[k % len(pool)].process.remote(batches[k])] = k % len(pool)
            following = iter(range(len(pending), len(batches)))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                worker = pending.pop(ready[0])
                rows, info = ray.get(ready[0])
                first = first or time.perf_counter() - t0
                self.seen_workers[info["pid"]] = info
                for row in rows:
                    if row["file"] in done:  # a retried batch: its images were redone, keep one row each
                        continue
                    done.add(row["file"])
                    summary.rows.append(row)
                    run.journal(row)
                    if progress:
                        progress.done(ok=row["status"] == "ok")
                nxt = next(following, None)
                if nxt is not None:
                    pending[pool[worker].process.remote(batches[nxt])] = worker
        except Exception as exc:
            cause = exc
            while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
                cause = getattr(cause, "cause", None) or cause.__cause__
            if isinstance(cause, SkinsegError):
                raise cause from None
            raise SkinsegError(f"the Ray run failed: {first_line(exc)}; finished images are kept, rerun with "
                               "--resume") from exc
        finally:
            self.startup = first
            if self.address == "local":
                ray.shutdown()
        total = time.perf_counter() - t0
        if first is not None and first > total / 2:
            ui.info(f"Ray's start-up took {first:.0f} s of this run's {total:.0f} s: for {len(todo)} images a run "
                    "without --ray is faster; --ray pays off on many images or several machines")
