"""Output folders: fresh numbered run folders, nothing written outside them or through a link, never an
input folder, one run at a time, nothing left in the home folder."""

import fcntl
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from skinseg.cli import app
from skinseg.shared.images import encode
from tests.cli_helpers import SAMPLE, SAMPLES, TEST256, csv_rows, invoke, run_skinseg, runner, small_png
from tests.onnx_factory import make_model, stripes


def test_runs_get_fresh_numbered_folders_and_a_full_output_needs_a_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_model(tmp_path / "m.onnx", tile=(64, 64))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(".png", stripes(40, 40)))
    for _ in range(2):
        assert runner.invoke(app, ["infer", "in", "--model", str(model), "-q"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "infer").iterdir()) == ["run", "run-2"]
    assert runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q"]).exit_code == 0
    res = runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q"], terminal_width=250)
    assert res.exit_code == 2 and "--resume" in res.output and "--exist-ok" in res.output
    assert runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q", "--exist-ok"]).exit_code == 0


@pytest.mark.parametrize("args", [["infer", str(SAMPLES), "--provider", "cuda"],
                                  ["infer", str(SAMPLES), "--model", "missing.onnx"],
                                  ["infer", "missing.jpg"],
                                  ["infer", str(SAMPLES), "--overlap", "2"],
                                  ["eval", "--images", str(TEST256), "--model", "missing.onnx"]])
def test_a_command_that_fails_before_its_first_output_creates_no_folder(tmp_path, args):
    res = run_skinseg(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert not (tmp_path / "runs").exists()
    ok = run_skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "-q", cwd=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "runs" / "infer" / "run").is_dir()  # the first real run is `run`


def test_recursive_infer_never_reads_back_its_own_outputs(tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        small_png(tmp_path / f"img{i}.png", i)
    for _ in range(3):
        assert runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-q"]).exit_code == 0
    out = tmp_path / "runs" / "infer"
    assert [len(csv_rows(d / "results.csv")) for d in sorted(out.iterdir())] == [3, 3, 3]
    res = runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-o", "mine", "-q"])
    assert res.exit_code == 0 and len(csv_rows(tmp_path / "mine" / "results.csv")) == 3
    res = runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-o", "mine", "-q", "--resume"])
    assert res.exit_code == 0
    assert len(csv_rows(tmp_path / "mine" / "results.csv")) == 3


def test_a_second_run_into_a_busy_folder_fails_at_once(tmp_path, model):
    small_png(tmp_path / "a.png")
    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".skinseg.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), "-o", str(out), "-q",
                                  "--exist-ok"], terminal_width=250)
    assert res.exit_code == 2 and "another skinseg run is writing" in res.output


def test_runs_write_nothing_to_the_home_folder(tmp_path, model):
    """ONNX Runtime's telemetry database and matplotlib's cache stay out of ~ (eval draws plots)."""

    home = tmp_path / "home"
    home.mkdir()
    small_png(tmp_path / "a.png")
    (tmp_path / "a_segmentation.png").write_bytes(encode(".png", np.zeros((40, 60), np.uint8)))
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "MPLCONFIGDIR")} | {"HOME": str(home)}
    for args in (["infer", str(tmp_path / "a.png"), "-o", str(tmp_path / "o")],
                 ["eval", "--images", str(tmp_path), "-o", str(tmp_path / "e")]):
        res = subprocess.run([sys.executable, "-m", "skinseg", *args, "--model", str(model), "-q"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode in (0, 1), res.stderr
    assert list(home.rglob("*")) == []


def test_an_output_folder_that_is_or_holds_an_input_is_refused_before_writing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLE, images)
    before = sorted(p.name for p in images.iterdir())
    for out in (images, tmp_path):
        res = invoke("infer", str(images), "-o", str(out), "--exist-ok", "-q")
        assert res.exit_code == 2 and "holds, the input" in res.output
    assert sorted(p.name for p in images.iterdir()) == before  # not even a marker
    res = invoke("eval", "--images", str(TEST256), "-o", str(TEST256 / "images"), "--exist-ok", "-q")
    assert res.exit_code == 2 and "holds, the input" in res.output


@pytest.mark.parametrize("planted", [".skinseg-output", ".skinseg.lock", "masks", "overlays"])
def test_nothing_is_written_through_a_link_in_the_output_folder(tmp_path, planted):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    target = elsewhere if planted in ("masks", "overlays") else elsewhere / "file"
    (out / planted).symlink_to(target)
    res = invoke("infer", str(SAMPLE), "-o", str(out), "--exist-ok", "-q")
    assert res.exit_code == 2 and "symbolic link" in res.output
    assert not list(elsewhere.iterdir())
