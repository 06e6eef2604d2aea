"""The one exception type a user can cause; the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class SkinsegError(Exception):
    """A problem the user can fix (bad config, bad model, bad flag): message says what, where, what to do."""

    exit_code = 2


class InputError(SkinsegError):
    """One input (image, mask) could not be used; runs report it and go on."""

    exit_code = 1


class ModelError(SkinsegError):
    """The model cannot be used as it is (bad file, contradictory metadata, non-finite output): exit 2."""


def megapixels(pixels: int) -> str:
    """Pixels as megapixels in an error line: whole from 10 MP up, two significant figures below, so a
    small limit reads 0.0015 MP and a 3.5 MP image is not rounded to its 4 MP limit."""
    mp = pixels / 1e6
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.2g}"


def file_size(n: int) -> str:
    """Bytes in an error line, in the unit that shows the figure (GB, MB, or bytes)."""
    if n >= 100_000_000:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (a library's multi-line error, shown in one line)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
