"""Which images with masks a command scores: folders given by flag, else a config's split, paired by
the one rule for where masks live (eval scores [test]; review-threshold decides on [eval])."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.shared.dataset import config_split, locate_split, split_pairs
from skinseg.shared.errors import SkinsegError


def find_split(config: Path | None, images: Path | None, masks: Path | None, section: str = "test") -> Any:
    """The folders to score: --images/--masks, else the config's `section` split."""
    if images is None and config is not None:
        from skinseg.shared.config import load_config

        dirs = config_split(load_config(config, ui.warn), section)
        if dirs is None:
            raise SkinsegError(f"{config}: [{section}] image_datapath is not set; or pass --images and --masks")
        return dirs
    if images is None:
        raise SkinsegError(f"no data with masks: give a config with a [{section}] section, or --images DIR --masks DIR")
    for flag, folder in (("--images", images), ("--masks", masks)):
        if folder is not None and not Path(folder).is_dir():
            raise SkinsegError(f"{flag} {folder}: no such folder")
    return locate_split(images, masks)


def pairs_for(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Pairs to score, and (file, reason) for every input that cannot be scored (reported, not fatal)."""
    p = split_pairs(images, masks)
    problems = [(str(i), "no matching mask") for i in p.images_without_mask]
    problems += [(str(m), "mask without an image") for m in p.masks_without_image]
    problems += [(k, "several masks for one image id") for k in p.duplicate_ids]
    if not p.pairs:
        raise SkinsegError(f"no image/mask pairs in {images} and {masks} (masks named <id>_segmentation.png?)")
    return p.pairs, problems
