"""Terminal output: one console, error lines, progress bars (rich)."""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Closable:
    """A standard stream whose reader may go away: a closed pipe (`skinseg infer ... | head`) or a full
    device ends what is printed, never the run or its exit code (the outputs are on disk)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gone = False

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:  # an ASCII terminal (PYTHONIOENCODING=ascii) and a non-ASCII name
                enc = self.encoding
                return self.stream.write(text.encode(enc, "backslashreplace").decode(enc))
            except (BrokenPipeError, OSError) as exc:
                if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.ENOSPC):
                    raise
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except (BrokenPipeError, OSError) as exc:
                if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.ENOSPC):
                    raise
                self._drop()

    def _drop(self) -> None:
        """Stop writing, and point the descriptor at /dev/null so Python's own flush at exit is quiet."""
        self.gone = True
        try:
            fd = self.stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"


console = Console(file=_Closable("stderr"), stderr=True, highlight=False)
out = Console(file=_Closable("stdout"), highlight=False)


def error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)


def progress(transient: bool = False, disable: bool = False) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=transient, disable=disable)


class ImageTileProgress:
    """Two bars: images done, and tiles of the current image (only for images of many tiles)."""

    def __init__(self, quiet: bool = False) -> None:
        self.bar = progress(disable=quiet)
        self.images: Any = None
        self.tile_task: Any = None

    def __enter__(self) -> ImageTileProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def start(self, total: int, skipped: int) -> None:
        self.images = self.bar.add_task("images", total=total, completed=skipped)

    def image(self, name: str, tiles: int) -> None:
        if self.tile_task is not None:
            self.bar.remove_task(self.tile_task)
            self.tile_task = None
        if tiles > 8:
            self.tile_task = self.bar.add_task(f"  tiles {name[:30]}", total=tiles)

    def tiles(self, n: int) -> None:
        if self.tile_task is not None:
            self.bar.advance(self.tile_task, n)

    def done(self, ok: bool) -> None:
        self.bar.advance(self.images, 1)


def table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None,
          right: tuple[int, ...] = ()) -> None:
    """Print a table; plain string cells are shown literally (file names may hold [brackets]), rich
    Text cells keep their style."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=escape(title), caption=escape(caption) if caption else None)
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i in right else "left")
    for r in rows:
        t.add_row(*[c if isinstance(c, Text) else Text(str(c)) for c in r])
    out.print(t)
