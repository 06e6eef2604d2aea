"""Helpers the command-line tests share: the CLI in-process or as a child process, small inputs, rows."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import encode
from tests.onnx_factory import make_model, stripes
from tests.realdata import ISIC256

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SAMPLE = SAMPLES / "ISIC_0000002.jpg"
TEST256 = ROOT / "tests" / "data" / "isic" / "isic256" / "test"
runner = CliRunner()


def invoke(*args: str):
    """`skinseg ARGS` in this process, on a wide terminal."""
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


def run_skinseg(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """`skinseg ARGS` as a child process in `cwd`."""
    return subprocess.run([sys.executable, "-m", "skinseg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"}, **kw)


def small_png(path: Path, seed: int = 0) -> Path:
    path.write_bytes(encode(".png", stripes(40, 60, seed=seed)))
    return path


def csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file, or of a run folder's results.csv."""
    path = Path(path)
    with open(path if path.suffix == ".csv" else path / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fake_run(tmp_path: Path, name: str = "cfg", exported: bool = True) -> tuple[Path, Path]:
    """A config and the run folder `skinseg train` would have made for it (exported or not)."""
    cfg = tmp_path / f"{name}.ini"
    cfg.write_text(f'[train]\nruns_dir = "runs"\n[test]\nimage_datapath = "{ISIC256}/test/images"\n')
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "config.ini").write_text("[train]\n")
    (run / "state.json").write_text('{"epoch": 1}')
    (run / "best.keras").write_bytes(b"PK")
    if exported:
        make_model(run / "model-int8.onnx", tile=(64, 64), metadata={"skinseg.format": "2"})
    return cfg, run
