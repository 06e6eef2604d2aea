"""A newcomer's first hour, round two: no empty run folders, no stray lock files, a closed pipe is not a
failure, -q still says where results are, honest warnings, doctor for the install at hand, pictures."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TEST256 = ROOT / "tests" / "data" / "isic" / "isic256" / "test"
runner = CliRunner()


def skinseg(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skinseg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"}, **kw)


@pytest.mark.parametrize("args", [["infer", str(SAMPLES), "--provider", "cuda"],
                                  ["infer", str(SAMPLES), "--model", "missing.onnx"],
                                  ["infer", "missing.jpg"],
                                  ["infer", str(SAMPLES), "--overlap", "2"],
                                  ["eval", "--images", str(TEST256), "--model", "missing.onnx"]])
def test_a_command_that_fails_before_its_first_output_creates_no_folder(tmp_path, args):
    res = skinseg(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert not (tmp_path / "runs").exists()
    ok = skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "-q", cwd=tmp_path)
    assert ok.returncode == 0 and (tmp_path / "runs" / "infer" / "run").is_dir()  # the first real run is `run`


def test_no_lock_file_stays_and_quiet_keeps_where_the_results_are(tmp_path):
    res = skinseg("infer", str(SAMPLES), "-o", str(tmp_path / "out"), "-q", cwd=tmp_path)
    assert res.returncode == 0
    assert not list((tmp_path / "out").glob(".skinseg*.lock"))
    assert res.stdout.strip().splitlines() == [f"results in {tmp_path / 'out'} (4 ok, 0 failed)"]
    ev = skinseg("eval", "--images", str(TEST256), "-o", str(tmp_path / "ev"), "-q", "--worst", "0", cwd=tmp_path)
    assert ev.returncode == 0 and ev.stdout.strip().splitlines()[-1].startswith(f"reports in {tmp_path / 'ev'}")


def test_a_closed_pipe_or_a_full_stdout_is_not_a_failed_run(tmp_path):
    for i in range(3):
        out = tmp_path / f"pipe{i}"
        res = subprocess.run(f"{sys.executable} -m skinseg infer {SAMPLES} -o {out} | head -c 10 >/dev/null; "
                             "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                             text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
        assert res.stdout.strip() == "0", res.stderr
        assert len(list((out / "masks").glob("*.png"))) == 4
    if Path("/dev/full").exists():
        with open("/dev/full", "w") as full:
            res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(SAMPLES), "-o", str(tmp_path / "f")],
                                 stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
        assert res.returncode == 0 and len(list((tmp_path / "f" / "masks").glob("*.png"))) == 4


def test_a_scale_far_from_the_models_warns_with_the_figures(tmp_path):
    res = skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "--scale", "native", "--no-tta", "-o",
                  str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 0
    assert "--scale native: this model works at 256 px" in res.stderr and "tiles instead of 1" in res.stderr
    quiet = skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "--scale", "300", "-o", str(tmp_path / "p"),
                    cwd=tmp_path)
    assert "works at 256 px" not in quiet.stderr  # within 2x: no warning


def test_doctor_speaks_of_the_install_at_hand():
    res = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "AzureExecutionProvider" not in res.output and "keras: None" not in res.output
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        assert "training side" in res.output and "[cpu,train]" in res.output
    if shutil.which("nvidia-smi") is None:
        assert "CUDA libraries are installed" not in res.output


def test_init_config_makes_its_folder_and_refuses_a_folder(tmp_path):
    res = runner.invoke(app, ["init-config", str(tmp_path / "new" / "config.ini")], env={"COLUMNS": "40"})
    assert res.exit_code == 0 and (tmp_path / "new" / "config.ini").is_file()
    assert f"  skinseg train {tmp_path / 'new' / 'config.ini'}" in res.output.splitlines()  # one line, unwrapped
    res = runner.invoke(app, ["init-config", str(tmp_path), "--force"])
    assert res.exit_code == 2 and "is a folder" in res.output


def test_plain_bench_says_where_the_time_goes_and_what_the_ratio_compares():
    res = runner.invoke(app, ["bench", "--size", "800x600", "--repeat", "1", "--threads", "1"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "compares one whole image" in res.output and "ms per image by stage" in res.output
    assert "the model is" in res.output and "% of an image's time here" in res.output
    for bad in (["--size", "0x0"], ["--repeat", "0"], ["--image", "/nonexistent.jpg"]):
        out = runner.invoke(app, ["bench", *bad])
        assert out.exit_code == 2 and "error:" in out.output


def test_worst_gallery_has_a_legend_and_no_blank_bands(tmp_path):
    res = runner.invoke(app, ["eval", "--images", str(TEST256), "-o", str(tmp_path / "ev"), "-q", "--worst", "4"])
    assert res.exit_code == 0
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "ev" / "worst.png")), cv2.COLOR_BGR2RGB)
    legend = img[:34]
    from skinseg.shared.render import LESION, TRUTH

    for colour in (TRUTH, LESION):  # the swatches that say which outline is which
        assert (np.abs(legend.astype(int) - colour).sum(axis=2) < 10).sum() > 100
    white_rows = (img.min(axis=(1, 2)) > 250).sum()
    assert white_rows < 0.2 * img.shape[0]  # captions sit under their images, no letterbox bands


def test_a_run_folders_default_on_the_cpu_is_the_faster_accepted_precision(tmp_path, monkeypatch):
    from skinseg.inference import adapter, model_files
    from skinseg.runner import models
    from skinseg.shared.runfolder import RunFolder

    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    rf = RunFolder(run)
    shutil.copy(model_files.FP32, rf.model)
    shutil.copy(model_files.INT8, rf.variant("int8"))
    times = {rf.model.name: 1.0, rf.variant("int8").name: 2.0}  # INT8 slower here (a tiny model, no VNNI)
    monkeypatch.setattr(adapter.ModelAdapter, "latency_ms", lambda self, runs=20: times[self.model_path.name])
    assert models.faster_on_cpu(rf) == rf.model
    times[rf.variant("int8").name] = 0.5
    assert models.faster_on_cpu(rf) == rf.variant("int8")
    rf.variant("int8").unlink()  # only FP32 exported (or INT8 refused by the gate)
    assert models.faster_on_cpu(rf) == rf.model
