"""`skinseg infer --ray ADDRESS`: the same run on a Ray cluster, with Ray Data as the scheduler.

The driver plans the jobs (paths and output names only, never pixels), keeps the output contract
(lock, resume, results.csv, run.json, exit codes) and streams rows back. A pool of actors, each
holding one loaded model, reads its images, runs the engine and writes masks and overlays straight
into the output folder (local disk on a one-node cluster, a mount every node sees otherwise). A
worker that dies is replaced by Ray and its images are retried; the driver keeps one row per image.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from skinseg.commands.infer import InferRun, Job, RunSummary
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.shared.errors import SkinsegError, first_line
from skinseg.shared.install import install_hint

BATCH = 8  # images per actor call: a little faster than 1 (README); a retry redoes at most 8


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the extra installs both
    except ImportError as exc:
        raise SkinsegError(f"--ray needs Ray Data: {install_hint('cpu,ray')}") from exc
    return ray


def cpus_per_socket() -> int:
    """Cores of one CPU socket on this machine (the default worker's share of a node)."""
    sockets = {p.read_text().strip() for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/"
                                                                                   "physical_package_id")}
    return max(1, (os.cpu_count() or 1) // max(1, len(sockets)))


class _Worker:
    """A Ray Data actor: one loaded model, one image at a time, outputs written where every node sees."""

    def __init__(self, model: str, provider: str, engine: EngineOptions, output: str, overlay_max: int | None) -> None:
        seg = Segmenter(model, provider, engine)
        self.run = InferRun(seg, Path(output), overlay_max=overlay_max)
        self.info = {"pid": os.getpid(), "node": socket.gethostname(), "providers": seg.providers}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        rows = [self.run.process_one(Job(Path(os.fsdecode(bytes(p))), str(n)))
                for p, n in zip(batch["path"], batch["name"], strict=True)]
        return {"row": [json.dumps(r) for r in rows], "worker": [json.dumps(self.info)] * len(rows)}


class RayInferRun(InferRun):
    """InferRun whose images are processed by a pool of Ray actors instead of this process."""

    def __init__(self, seg: Segmenter, output: Path, *, address: str, workers: int = 0, gpus_per_worker: float = 0,
                 provider: str = "auto", **kwargs: Any) -> None:
        super().__init__(seg, output, **kwargs)
        self.address, self.workers, self.gpus = address, workers, gpus_per_worker
        self.provider = provider
        self.seen_workers: dict[int, dict[str, Any]] = {}
        self.cluster: dict[str, Any] = {}

    def extra_run_info(self) -> dict[str, Any]:
        return {"ray": {"address": self.address, "workers": self.workers, "gpus_per_worker": self.gpus,
                        "cluster": self.cluster,
                        "nodes": sorted({w["node"] for w in self.seen_workers.values()}),
                        "providers": sorted({p for w in self.seen_workers.values() for p in w["providers"][:1]}),
                        "worker_processes": len(self.seen_workers)}}

    def _connect(self) -> Any:
        ray = _ray()
        for name in ("ray", "ray.data"):  # the driver shows skinseg's progress; Ray's own lines are noise here
            logging.getLogger(name).setLevel(logging.ERROR)
        if not ray.is_initialized():
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

    def _process(self, todo: list[Job], summary: RunSummary, progress: Any) -> None:
        if not todo:
            return
        ray = self._connect()
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
        cpus = max(1.0, self.cluster["cpus"] / self.workers) if not self.gpus else 1.0
        engine = self.seg.options.with_(threads=self.seg.options.threads or int(cpus))
        items = [{"path": os.fsencode(str(j.path)), "name": j.name} for j in todo]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), self.workers * 8))
        # Ray Data restarts a dead actor and retries its tasks by default (max_restarts / max_task_retries -1)
        ds = ds.map_batches(_Worker, batch_size=BATCH, compute=ray.data.ActorPoolStrategy(size=self.workers),
                            num_cpus=cpus, num_gpus=self.gpus or None,
                            fn_constructor_kwargs={"model": str(self.seg.model_path), "provider": self.provider,
                                                   "engine": engine, "output": str(self.out),
                                                   "overlay_max": self.overlay_max})
        done: set[str] = set()
        try:
            for item in ds.iter_rows():
                row = json.loads(item["row"])
                worker = json.loads(item["worker"])
                self.seen_workers[worker["pid"]] = worker
                if row["file"] in done:  # a retried task: its images were redone, keep one row each
                    continue
                done.add(row["file"])
                summary.rows.append(row)
                self._journal(row)
                if progress:
                    progress.done(ok=row["status"] == "ok")
        except Exception as exc:
            cause = exc
            while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
                cause = getattr(cause, "cause", None) or cause.__cause__
            if isinstance(cause, SkinsegError):
                raise cause from None
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise SkinsegError(f"the Ray run failed: {first_line(exc)}; finished images are kept, rerun with "
                               "--resume") from exc
        finally:
            if self.address == "local":
                ray.shutdown()
