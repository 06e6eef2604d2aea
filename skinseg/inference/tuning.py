"""Choices made by measurement, once per model and machine: which CPU-side provider runs a model
fastest here (`--provider auto` with the OpenVINO EP installed) and which graph optimisation level
(`--graph-opt auto` for INT8 models on the CPU EP, where the best level depends on the CPU and the
ONNX Runtime version: 2x either way on the machines measured, docs/providers.md).

A choice is cached in the skinseg cache folder, keyed by the model's sha256, the CPU, the ONNX Runtime
version, the threads, the tile and the candidates, so later starts do not measure again and keep
giving the same masks on this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable
from typing import Any

from skinseg.shared import files
from skinseg.shared.errors import SkinsegError
from skinseg.shared.system import cache_dir, cpu_flags, cpu_model


def choose(key: dict[str, Any], candidates: dict[str, Callable[[], float]]) -> tuple[str, dict[str, float], bool]:
    """(the fastest candidate's name, milliseconds per candidate, whether it came from the cache).
    Each candidate is a function that returns its time; they run only when no choice is cached."""
    import onnxruntime as ort

    full = key | {"cpu": cpu_model(), "flags": sorted({"avx512_vnni", "amx_int8", "amx_bf16"} & cpu_flags()),
                  "onnxruntime": ort.__version__, "candidates": sorted(candidates)}
    name = json.dumps(full, sort_keys=True)
    folder = cache_dir()
    path = folder / "choices.json"
    # one process measures at a time: two measuring at once could choose differently, and their masks differ
    with open(folder / "choices.lock", "a") as lock:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = {}
        hit = cached.get(name)
        if isinstance(hit, dict) and hit.get("choice") in candidates:
            return hit["choice"], hit.get("ms", {}), True
        ms = {label: round(measure(), 3) for label, measure in candidates.items()}
        choice = min(ms, key=lambda label: ms[label])
        cached[name] = {"choice": choice, "ms": ms}
        with contextlib.suppress(OSError, SkinsegError):  # unwritable: measured again next time, nothing else
            files.write_json(path, cached)
    return choice, ms, False
