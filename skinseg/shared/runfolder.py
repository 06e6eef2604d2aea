"""A training run's folder: the one place that knows what `skinseg train` writes and where.

runs/train/<name>/: config.ini (resolved), data.json, versions.json, best.keras, last.keras,
state.json, history.csv, curves.png, tensorboard/, augmentations.png, and after `skinseg export`
model.onnx (+ model-fp16.onnx, model-int8.onnx). Train, export, eval and infer read it through here.
"""

from __future__ import annotations

import csv
import json
import os
import re
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from skinseg.shared import files
from skinseg.shared.errors import SkinsegError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


class RunFolder:
    """Paths and records of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- the files ---------------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.ini")
    data = property(lambda self: self.path / "data.json")
    versions = property(lambda self: self.path / "versions.json")
    best = property(lambda self: self.path / "best.keras")
    last = property(lambda self: self.path / "last.keras")
    state = property(lambda self: self.path / "state.json")
    history = property(lambda self: self.path / "history.csv")
    curves = property(lambda self: self.path / "curves.png")
    tensorboard = property(lambda self: self.path / "tensorboard")
    augmentations = property(lambda self: self.path / "augmentations.png")
    model = property(lambda self: self.path / "model.onnx")  # what `skinseg export RUN` writes

    def variant(self, precision: str) -> Path:
        """The exported model of one precision: model.onnx (fp32), model-fp16.onnx, model-int8.onnx."""
        return self.model if precision == "fp32" else self.path / f"model-{precision}.onnx"

    # -- finding and creating ------------------------------------------------------------------------
    @classmethod
    def of(cls, path: str | Path) -> RunFolder | None:
        """The run folder `path` is, or holds a file of (best.keras, model.onnx...); None otherwise."""
        p = Path(path)
        folder = p if p.is_dir() else p.parent
        return cls(folder) if (folder / "config.ini").is_file() and (
            (folder / "state.json").is_file() or (folder / "best.keras").is_file()) else None

    @classmethod
    def latest(cls, runs_dir: Path, name: str) -> RunFolder | None:
        """The newest run of a config: runs_dir/name, or its highest-numbered sibling name-N."""
        runs = [p for p in Path(runs_dir).glob(f"{glob_escape(name)}*") if p.is_dir() and
                (p.name == name or re.fullmatch(re.escape(name) + r"-\d+", p.name))]
        runs.sort(key=lambda p: 1 if p.name == name else int(p.name.rsplit("-", 1)[1]))
        return cls(runs[-1]) if runs else None

    def exported(self, prefer_int8: bool) -> Path:
        """Its exported model: INT8 first on the CPU, FP32 first on a GPU; an error with the export
        command when there is none."""
        order = [self.variant("int8"), self.model] if prefer_int8 else [self.model, self.variant("int8")]
        found = next((p for p in order if p.is_file()), None)
        if found is None:
            raise SkinsegError(f"{self.path} has no exported model yet: run `skinseg export {self.path} --int8` "
                               "(needs skinseg[train]), then run this again")
        return found

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> RunFolder:
        """A new folder runs_dir/name, numbered name-2, name-3... when taken."""
        if not SAFE_NAME.match(name):
            raise SkinsegError(f"run name {name!r}: use letters, digits, '.', '_', '+' and '-' only (no folders)")
        return cls(new_folder(Path(runs_dir), name, "[train] runs_dir"))

    # -- records -------------------------------------------------------------------------------------
    def read_json(self, path: Path, default: Any = None) -> Any:
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SkinsegError(f"{path}: damaged ({exc}); restore it or start a new run") from exc

    def read_state(self) -> dict[str, Any]:
        state = self.read_json(self.state, {})
        if not isinstance(state, dict) or not isinstance(state.get("epoch", 0), int):
            raise SkinsegError(f"{self.state}: damaged (no epoch count); restore it or start a new run")
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        files.write_json(self.state, state)

    def read_history(self) -> list[dict[str, str]]:
        """Rows of history.csv (one per epoch), [] when there is none."""
        if not self.history.is_file():
            return []
        with open(self.history, newline="", encoding="utf-8") as fh:
            return [r for r in csv.DictReader(fh) if (r.get("epoch") or "").isdigit()]

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        files.write_csv(self.history, list(dict.fromkeys(k for r in rows for k in r)), rows)

    def best_row(self) -> dict[str, str]:
        """The history row of the best epoch, {} when unknown."""
        best = self.read_state().get("best_epoch")
        return next((r for r in self.read_history() if int(r["epoch"]) == best), {})


def new_folder(parent: Path, name: str, what: str = "output folder") -> Path:
    """Create parent/name, or name-2, name-3... when taken (the convention Ultralytics users know)."""
    if parent.exists() and not parent.is_dir():
        raise SkinsegError(f"{what} {parent} is a file, not a folder; choose another")
    path, i = parent / name, 2
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            path, i = parent / f"{name}-{i}", i + 1
        except OSError as exc:
            raise SkinsegError(f"cannot create {path}: {exc.strerror or exc}; choose another {what}") from exc


def check_apart(output: Path, inputs: list[str | os.PathLike[str]]) -> None:
    """An output folder may not be an input folder or hold one: its own masks would become inputs, and
    a later run would read them back."""
    out = Path(output).resolve()
    for given in inputs:
        text = str(given)
        base = Path(text.split("*")[0].split("?")[0].split("[")[0] or ".")  # a glob's fixed part
        where = base.resolve()
        if where == out or out in where.parents:
            raise SkinsegError(f"--output {output} is, or holds, the input {given}: its outputs would be read back "
                               "as inputs; choose an output folder outside the inputs")


def output_folder(output: Path | None, command: str, *, resume: bool = False, exist_ok: bool = False,
                  inputs: list[str | os.PathLike[str]] | None = None) -> Path:
    """Where a command writes: a fresh runs/<command>/run[-N] without -o; with -o, a folder that is new or
    empty, unless --resume (finish it) or --exist-ok (add to it) says otherwise; never one that is or
    holds an input."""
    if output is None:
        if resume:
            raise SkinsegError("--resume needs -o OUT: the output folder of the run to finish")
        out = new_folder(Path("runs") / command, "run")
        files.mark_output(out)
        return out
    output = Path(output)
    check_apart(output, inputs or [])
    if output.exists() and not output.is_dir():
        raise SkinsegError(f"--output {output} is a file; give a folder")
    busy = output.is_dir() and any(output.iterdir())
    if busy and not (resume or exist_ok):
        if command != "infer":  # only infer can finish a run it started
            raise SkinsegError(f"--output {output} already holds results: add --exist-ok to write into it, or leave "
                               f"-o out for a fresh runs/{command}/run-N folder")
        raise SkinsegError(f"--output {output} already holds results: add --resume to finish that run, --exist-ok "
                           "to add to it, or leave -o out for a fresh runs/" + command + "/run-N folder")
    files.ensure_writable_dir(output)
    files.mark_output(output)
    return output
