"""A batch run's units: the images to do (`Job`), what became of them (`RunSummary`), and the one rule
that turns an image's failure into its error row."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinseg.shared import files
from skinseg.shared.errors import InputError, SkinsegError


def failure(exc: Exception) -> str:
    """The error-row reason for one image that failed; model and flag errors (exit code 2) are raised
    instead: they would fail every image, so they end the run once."""
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, SkinsegError) and exc.exit_code == 2:
        raise exc
    if isinstance(exc, OSError):  # reading is checked by the image reader: this is a write
        return f"cannot write outputs: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass
class Job:
    """One input image and where its outputs go."""

    path: Path
    name: str  # output stem, unique within the run (case-insensitively)

    def mask_path(self, out: Path) -> Path:
        return out / "masks" / f"{self.name}.png"

    def overlay_path(self, out: Path) -> Path:
        return out / "overlays" / f"{self.name}.jpg"

    def seg_path(self, out: Path) -> Path:
        """The DICOM Segmentation of a DICOM input."""
        return out / "seg" / f"{self.name}.dcm"

    def sr_path(self, out: Path) -> Path:
        """The measurement report (DICOM SR) of a DICOM input whose scale is known."""
        return out / "sr" / f"{self.name}.dcm"

    @functools.cached_property
    def is_dicom(self) -> bool:
        """A .dcm name or the DICM preamble (132 bytes read once): its outputs include a SEG."""
        from skinseg.shared.dicom import looks_like_dicom

        if looks_like_dicom(b"", self.path.name):
            return True
        if not self.path.is_file():  # a pipe or device: opening it could wait forever (the reader refuses it)
            return False
        try:
            with open(self.path, "rb") as fh:
                return looks_like_dicom(fh.read(132))
        except OSError:
            return False


@dataclass
class RunSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'K/N' (1-based K) -> (K, N)."""
    if not value:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError as exc:
        raise SkinsegError(f"--shard {value!r}: expected K/N, e.g. 1/4 for the first of four slices") from exc
    if not (n >= 1 and 1 <= k <= n):
        raise SkinsegError(f"--shard {value!r}: K must be between 1 and N")
    return k, n


def plan_jobs(images: list[Path], shard: tuple[int, int] | None = None) -> list[Job]:
    """Output names from input stems only, unique case-insensitively whatever the inputs are called
    (a repeated stem gets ~2, ~3..., skipping names another input already has), then the shard.

    Names are assigned before sharding, so every machine of a sharded run agrees on them.
    """
    jobs = [Job(p, name) for p, name in zip(images, files.unique_stems(images), strict=True)]
    if shard:
        k, n = shard
        jobs = [j for i, j in enumerate(jobs) if i % n == k - 1]
    return jobs
