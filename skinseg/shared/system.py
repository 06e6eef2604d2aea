"""The process and its environment: versions for provenance, SIGTERM handled as Ctrl-C, peak memory."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skinseg import __version__


def versions(**extra: Any) -> dict[str, Any]:
    """Versions of what decides a run's pixels, for run.json and training state (plus `extra`)."""
    import cv2
    import numpy as np

    found: dict[str, Any] = {"skinseg": __version__, "python": platform.python_version(), "numpy": np.__version__,
                             "opencv": cv2.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        found["onnxruntime"] = ort.__version__
    return found | extra | {"platform": platform.platform()}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM (a scheduler or `kill`) ends work the way Ctrl-C does, so what is done is kept.
    Only the main thread can set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags") and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, flags


def cpu_model() -> str:
    """This CPU's name (Linux /proc/cpuinfo; the platform's word elsewhere)."""
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return _cpuinfo()[1]


def has_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AMX or AVX-512 BF16); elsewhere bf16 is emulated."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cache_dir(*parts: str) -> Path:
    """skinseg's cache folder (SKINSEG_CACHE, else XDG_CACHE_HOME/skinseg: the system temp folder unless
    you set one, see skinseg/__init__.py), created on first use."""
    base = os.environ.get("SKINSEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "skinseg")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux VmHWM, because ru_maxrss survives exec: a process
    started from one that had loaded TensorFlow would report that process's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@functools.cache
def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def large_allocations_from_the_system(threshold: int = 1 << 20) -> None:
    """Make glibc serve allocations above `threshold` bytes with their own mappings, given back to the
    system when freed. By default glibc raises this threshold to the largest block freed so far (up to
    32 MB), after which full-size image buffers stay in the heap for good: a long-running service that
    met one large image would keep its memory. Does nothing outside glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (setting it also turns the dynamic threshold off)


def give_back_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim); does nothing elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
