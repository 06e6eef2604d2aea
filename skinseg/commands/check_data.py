"""`skinseg check-data`: the dataset checks (shared/dataset_check.py) over a folder or a config's splits."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from skinseg import ui
from skinseg.shared.dataset_check import check_split, config_splits, discover, duplicate_ids
from skinseg.shared.errors import SkinsegError


def run(root: Path, quiet: bool = False) -> int:
    """Check every split, print the table and each problem; the exit code (1 when anything is wrong)."""
    if root.is_file():
        from skinseg.shared.config import load_config

        splits = config_splits(load_config(root, ui.warn))
        if not splits:
            raise SkinsegError(f"{root}: names no data; set [train] image_datapath (and [eval], [test])")
    elif root.is_dir():
        splits = discover(root)
    else:
        raise SkinsegError(f"{root}: no such folder or config file")
    reports = []
    with ui.progress(transient=True, disable=quiet) as bar:
        for name, dirs in splits:
            task = bar.add_task(f"checking {name}", total=None)
            reports.append(check_split(name, dirs.images, dirs.masks, on_item=lambda t=task: bar.advance(t)))
    ui.table(f"skinseg check-data: {root}", ["split", "pairs ok", "unusable", "notes", "images", "masks"],
             [[r.name, r.usable, len(r.problems), len(r.notes), r.images_dir, r.masks_dir] for r in reports])
    for r in reports:
        for file, why in r.problems:
            ui.out.print(f"[red]unusable[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
        for file, why in r.notes:
            ui.out.print(f"[yellow]note[/] {r.name}: {escape(file)}: {escape(why)}", soft_wrap=True)
    leaks = duplicate_ids(reports)
    for key, where in leaks:
        ui.out.print(f"[red]duplicate id[/] {escape(key)} in {', '.join(where)}")
    usable = sum(r.usable for r in reports)
    bad = sum(len(r.problems) for r in reports) + len(leaks)
    if usable == 0:
        raise SkinsegError(f"{root}: no usable image/mask pairs: training could not proceed")
    ui.out.print(f"{usable} usable pairs, {bad} problems")
    return 1 if bad else 0
