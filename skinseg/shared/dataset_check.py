"""Is a dataset usable? Counts, pairing problems, unreadable files, bad masks (no TensorFlow).

Training's pre-flight and `skinseg check-data` (commands/check_data.py) both run these checks.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinseg.shared.dataset import Pairing, SplitDirs, config_split, locate_split, split_pairs
from skinseg.shared.errors import InputError
from skinseg.shared.images import load_image, read_binary_mask

SPLITS = ("train", "valid", "test")


@dataclass
class SplitReport:
    name: str
    images_dir: Path
    masks_dir: Path
    pairing: Pairing
    good: list[tuple[Path, Path]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): pair unusable
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, remark): usable, but look

    @property
    def usable(self) -> int:
        return len(self.good)


def inspect_pair(image: Path, mask: Path) -> tuple[str | None, str | None]:
    """(problem, note) for one pair: a problem makes it unusable; a note is worth a look."""
    try:
        loaded = load_image(image)  # decoded through the one reader (DICOM too): a truncated file only shows then
        h, w = loaded.height, loaded.width
        m, stored = read_binary_mask(mask)
    except InputError as exc:
        return str(exc), None
    if m.shape != (h, w) and m.shape != (w, h):
        return f"mask {mask.name} is {m.shape[1]}x{m.shape[0]} but image is {w}x{h}", None
    if m.shape != (h, w):
        return f"mask {mask.name} is rotated against its image ({m.shape[1]}x{m.shape[0]} vs {w}x{h})", None
    notes = [stored] if stored else []  # e.g. "8-bit mask with levels 0/1: 1 = lesion"
    if not m.any():
        notes.append("empty mask (no lesion)")
    return None, "; ".join(notes) or None


def check_split(name: str, images_dir: Path, masks_dir: Path, workers: int = 4,
                on_item: Callable[[], None] | None = None) -> SplitReport:
    pairing = split_pairs(images_dir, masks_dir)
    rep = SplitReport(name, images_dir, masks_dir, pairing)
    for img in pairing.images_without_mask:
        rep.problems.append((str(img), "no mask found (expected <id>_segmentation.png)"))
    for m in pairing.masks_without_image:
        rep.notes.append((str(m), "mask without image"))
    for key in pairing.duplicate_ids:
        rep.problems.append((key, "several masks for one image id"))

    def one(pair: tuple[Path, Path]) -> tuple[tuple[Path, Path], str | None, str | None]:
        problem, note = inspect_pair(*pair)
        if on_item:
            on_item()
        return pair, problem, note

    with ThreadPoolExecutor(workers) as pool:
        for pair, problem, note in pool.map(one, pairing.pairs):
            if problem:
                rep.problems.append((str(pair[0]), problem))
            else:
                rep.good.append(pair)
                if note:
                    rep.notes.append((str(pair[0]), note))
    return rep


CONFIG_SPLITS = (("train", "train"), ("valid", "eval"), ("test", "test"))  # (split name, config section)


def discover(root: Path) -> list[tuple[str, SplitDirs]]:
    """Splits under `root`: train/valid/test folders (seed layout), else root as a single split."""
    root = Path(root)
    found = [(s, locate_split(root / s)) for s in SPLITS if (root / s).is_dir()]
    return found or [(root.name or "data", locate_split(root))]


def config_splits(cfg: Any) -> list[tuple[str, SplitDirs]]:
    """The splits a config names ([train], [eval] as valid, [test]), by the same rule as training."""
    return [(name, dirs) for name, section in CONFIG_SPLITS if (dirs := config_split(cfg, section))]


def duplicate_ids(reports: list[SplitReport]) -> list[tuple[str, list[str]]]:
    """Image ids that appear in more than one split (leakage between train and test)."""
    where: dict[str, list[str]] = {}
    for rep in reports:
        for img, _ in rep.good:
            where.setdefault(img.stem.lower(), []).append(rep.name)
    return [(k, v) for k, v in sorted(where.items()) if len(set(v)) > 1]
