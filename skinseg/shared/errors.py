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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (a library's multi-line error, shown in one line)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
