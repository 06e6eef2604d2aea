"""Finding images and pairing them with masks, the same way for train, check-data and eval."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinseg.shared.errors import SkinsegError
from skinseg.shared.files import OUTPUT_MARKER
from skinseg.shared.images import IMAGE_EXTENSIONS

MASK_SUFFIXES = ("_segmentation", "_mask", "")  # compared case-insensitively


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_output_folder(folder: Path) -> bool:
    """A folder skinseg writes results into (infer, eval): its masks and overlays are never inputs."""
    return (folder / OUTPUT_MARKER).exists()


def _walk(folder: Path, recursive: bool, exclude: tuple[Path, ...] = ()) -> list[Path]:
    if is_output_folder(folder):
        return []
    if not recursive:
        return sorted(p for p in folder.iterdir() if is_image(p) and not p.name.startswith("."))
    found: list[Path] = []
    skip = {os.path.abspath(e) for e in exclude}
    # os.walk does not follow symlinked folders by default, so symlink loops cannot trap us.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(root, d)) not in skip
                         and not is_output_folder(Path(root) / d))
        found += [Path(root) / f for f in sorted(files) if is_image(Path(f)) and not f.startswith(".")]
    return found


def collect_images(inputs: list[str | Path], recursive: bool = False,
                   exclude: list[Path] | None = None) -> tuple[list[Path], list[str]]:
    """Expand files, folders and globs into a sorted, de-duplicated list of image paths.

    Folders in `exclude` (the run's own output folder) and folders skinseg wrote results into are
    never descended into. Returns (images, problems): problems are one-line messages for inputs that
    matched nothing.
    """
    skip = tuple(exclude or ())
    images: list[Path] = []
    problems: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = _walk(p, recursive, skip)
            if not found:
                problems.append(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif p.exists() or p.is_symlink():
            found = [p]
        elif glob.has_magic(str(raw)):
            found = sorted(Path(m) for m in glob.glob(str(raw), recursive=recursive) if is_image(Path(m)))
            if not found:
                problems.append(f"{raw}: pattern matched no images")
        else:
            found = []
            problems.append(f"{raw}: no such file or folder")
        images += found
    seen: set[Path] = set()
    unique = []
    for img in images:
        key = Path(os.path.abspath(img))
        if key not in seen:
            seen.add(key)
            unique.append(img)
    return unique, problems


def mask_key(path: Path) -> str:
    """The image id a mask file belongs to: stem without a _segmentation/_mask suffix, lower case."""
    stem = path.stem.lower()
    for suffix in MASK_SUFFIXES:
        if suffix and stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


@dataclass
class Pairing:
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)


def pair_images_masks(images: list[Path], masks: list[Path]) -> Pairing:
    """Pair `<id>.jpg` with `<id>_segmentation.png`, `<id>_Segmentation.png`, `<id>_mask.png` or `<id>.png`."""
    result = Pairing()
    by_id: dict[str, Path] = {}
    for m in masks:
        key = mask_key(m)
        if key in by_id:
            result.duplicate_ids.append(key)
            continue
        by_id[key] = m
    used: set[str] = set()
    for img in images:
        key = img.stem.lower()
        mask = by_id.get(key)
        if mask is None:
            result.images_without_mask.append(img)
        else:
            result.pairs.append((img, mask))
            used.add(key)
    result.masks_without_image = [m for k, m in by_id.items() if k not in used]
    return result


@dataclass(frozen=True)
class SplitDirs:
    """Where one split's images and masks live."""

    images: Path
    masks: Path


def locate_split(images: Path, masks: Path | None = None) -> SplitDirs:
    """The one rule for where a split's masks live, used by train, eval, export and check-data:

    1. an explicit masks folder, when given;
    2. a split folder holding `images/` and `masks/` (the seed's `<split>/images|masks`);
    3. an images folder with a `masks/` folder beside it (`<split>/images` -> `<split>/masks`);
    4. otherwise the same folder (masks named `<id>_segmentation.png` among the images).
    """
    images = Path(images)
    if masks is not None:
        return SplitDirs(images, Path(masks))
    if (images / "images").is_dir() and (images / "masks").is_dir():
        return SplitDirs(images / "images", images / "masks")
    beside = images.parent / "masks"
    if images.name.lower() == "images" and beside.is_dir():
        return SplitDirs(images, beside)
    return SplitDirs(images, images)


def config_split(cfg: Any, section: str) -> SplitDirs | None:
    """A config section's `image_datapath` / `mask_datapath` as folders (None when not set); missing
    folders are errors naming the file, section and key."""
    sec = getattr(cfg, section)
    img, mask = sec.image_datapath, sec.mask_datapath
    if not img:
        return None
    for key, folder in (("image_datapath", img), ("mask_datapath", mask)):
        if folder and not Path(folder).is_dir():
            raise SkinsegError(f"{cfg.path}: [{section}] {key} = {folder}: no such folder")
    return locate_split(Path(img), Path(mask) if mask else None)


def split_pairs(images_dir: Path, masks_dir: Path) -> Pairing:
    """Pair the images and masks of one split; in a mixed folder, mask-named files are masks."""
    if Path(images_dir) == Path(masks_dir):
        files = _walk(images_dir, False)
        masks = [f for f in files if f.stem.lower().endswith(("_segmentation", "_mask"))]
        images = [f for f in files if f not in set(masks)]
    else:
        images, masks = _walk(images_dir, False), _walk(masks_dir, False)
    return pair_images_masks(images, masks)
