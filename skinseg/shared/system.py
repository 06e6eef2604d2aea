"""The process and its environment: versions for provenance, SIGTERM handled as Ctrl-C, peak memory."""

from __future__ import annotations

import contextlib
import functools
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
