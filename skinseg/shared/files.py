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


def refuse_link(path: str | os.PathLike[str]) -> None:
    """Nothing is ever written through a link inside an output folder (a planted link could send files
    anywhere): a link where skinseg writes is one clear line, the folder is not used."""
    if os.path.islink(path):
        raise SkinsegError(f"{path} is a symbolic link; skinseg never writes through links in an output folder: "
                           "remove it, or choose another output folder")


def open_nofollow(path: str | os.PathLike[str], mode: str = "a", encoding: str | None = "utf-8",
                  newline: str | None = "") -> IO[Any]:
    """Open a file for appending (or reading and appending) without following a link at its name."""
    refuse_link(path)
    flags = os.O_CREAT | os.O_APPEND | (os.O_RDWR if "+" in mode else os.O_WRONLY) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise
    return os.fdopen(fd, mode, encoding=encoding, newline=newline)


def mark_output(folder: Path) -> None:
    """Mark a folder as skinseg's output, so `infer -r` over a parent never ingests it."""
    marker = Path(folder) / OUTPUT_MARKER
    refuse_link(marker)
    if not marker.exists():
        with open_nofollow(marker) as fh:
            fh.write("skinseg writes results here; skinseg never reads images from this folder\n")


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
    refuse_link(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
    except OSError as exc:
        raise SkinsegError(
            f"cannot write to output folder {path}: {exc.strerror or exc}; choose another --output"
        ) from exc
    return path


MAX_STEM_BYTES = 180  # output names stay far below the 255-byte file-name limit, temporary suffixes included


def safe_stem(stem: str) -> str:
    """An output stem that is valid UTF-8 and short enough for any file system (hash-suffixed if cut)."""
    clean = "".join("_" if "\udc80" <= ch <= "\udcff" else ch for ch in stem) or "image"
    raw = clean.encode("utf-8")
    if len(raw) <= MAX_STEM_BYTES:
        return clean
    digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore") + "-" + digest


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names from input stems only, unique case-insensitively whatever the inputs are called (a
    repeated stem gets ~2, ~3..., skipping names another input already has): `a.jpg` and `a.png` never
    write the same file. infer and eval --save-masks both name outputs this way."""
    stems = [safe_stem(p.stem) for p in paths]
    taken = {s.lower() for s in stems}
    used: set[str] = set()
    names = []
    for stem in stems:
        name, i = stem, 1
        while name.lower() in used or (i > 1 and name.lower() in taken):
            i += 1
            name = f"{stem}~{i}"
        used.add(name.lower())
        names.append(name)
    return names
