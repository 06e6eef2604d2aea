"""Files: atomic writes (a reader, or a resumed run, sees a complete file or none at all), CSV
and JSON records, content hashes."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from skinseg.shared.errors import SkinsegError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: temporary files are 0600, finished files get the usual permissions


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    # A short temporary name: `.<name>.XXXXXXXX.part` of a 241-byte name would pass the 255-byte limit.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise SkinsegError(f"disk full while writing {path}: free some space and run again") from exc
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
OUTPUT_MARKER = ".skinseg-output"  # in every folder skinseg writes results to: never read back as input


def shown(path: str | os.PathLike[str]) -> str:
    """A path as text for CSV files and messages: names that are not valid UTF-8 keep their bytes as
    \\x escapes instead of failing the write."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def csv_safe(row: dict[str, Any]) -> dict[str, Any]:
    """Cells as valid UTF-8 text; text that a spreadsheet would run as a formula (a file named
    `=cmd|...`) gets a leading quote."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str):
            v = shown(v)
            if v.startswith(FORMULA_START) and not _number(v):
                v = "'" + v
        out[k] = v
    return out


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def mark_output(folder: Path) -> None:
    """Mark a folder as skinseg's output, so `infer -r` over a parent never ingests it."""
    marker = Path(folder) / OUTPUT_MARKER
    if not marker.exists():
        marker.write_text("skinseg writes results here; skinseg never reads images from this folder\n")


def write_csv(path: str | os.PathLike[str], columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    """A whole CSV table, written atomically (extra keys in rows are ignored)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(map(csv_safe, rows))
    write_text(path, buf.getvalue())


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create `path` and prove we can write there, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
    except OSError as exc:
        raise SkinsegError(
            f"cannot write to output folder {path}: {exc.strerror or exc}; choose another --output"
        ) from exc
    return path
