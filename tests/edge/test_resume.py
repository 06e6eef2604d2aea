"""--resume, in one home: what an earlier run finished is kept only if the same model and every option
that can change a mask made it; damaged state is rebuilt; a killed run (kill -9, Ctrl-C, SIGTERM)
resumes to complete outputs."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.inference.options import EngineOptions
from skinseg.shared.images import encode, read_mask
from tests.cli_helpers import csv_rows
from tests.onnx_factory import make_model, stripes
from tests.running import assert_masks_as_uninterrupted, slow_job, wait_for_masks

runner = CliRunner()


def _png(path: Path, seed: int = 0) -> Path:
    path.write_bytes(encode(".png", stripes(40, 60, seed=seed)))
    return path


def test_resume_refuses_outputs_of_another_model_or_options(tmp_path, model):
    _png(tmp_path / "a.png")
    other = make_model(tmp_path / "other.onnx", tile=(64, 64), box=3)
    out = str(tmp_path / "o")
    assert runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), "-o", out, "-q"]).exit_code == 0
    for extra in (["--model", str(other)], ["--model", str(model), "--threshold", "0.3"],
                  ["--model", str(model), "--tta"]):
        res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), *extra, "-o", out, "-q", "--resume"],
                            terminal_width=250)
        assert res.exit_code == 2 and "made with another" in res.output, (extra, res.output)
    res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), "-o", out, "-q", "--resume"])
    assert res.exit_code == 0


def test_resume_rebuilds_damaged_state(tmp_path, model):
    for i in range(3):
        _png(tmp_path / f"img{i}.png", i)
    out = tmp_path / "o"
    args = ["infer", str(tmp_path), "--model", str(model), "-o", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    (out / "results.csv").write_bytes(os.urandom(300) + b"\xff\xfe")
    (out / "masks" / "img1.png").write_bytes(b"garbage")
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert [r["status"] for r in csv_rows(out / "results.csv")] == ["ok"] * 3
    assert read_mask(out / "masks" / "img1.png").shape == (40, 60)


def test_run_json_records_the_fingerprint(tmp_path, model):
    _png(tmp_path / "a.png")
    runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), "-o", str(tmp_path / "o"), "-q"])
    fp = json.loads((tmp_path / "o" / "run.json").read_text())["fingerprint"]
    assert len(fp["sha256"]) == 64 and fp["threshold"] == 0.5 and fp["reduced_decode"] is True


def test_resume_skips_complete_outputs(tmp_path, model, images):
    out = tmp_path / "out"
    args = ["infer", str(images), "--model", str(model), "-o", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    (out / "masks" / "img1.png").unlink()
    before = (out / "masks" / "img0.png").stat().st_mtime_ns
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0
    assert (out / "masks" / "img1.png").is_file()
    assert (out / "masks" / "img0.png").stat().st_mtime_ns == before
    run = json.loads((out / "run.json").read_text())
    assert run["skipped"] == 2 and run["ok"] == 3
    assert [r["status"] for r in csv_rows(out)] == ["ok"] * 3


def test_kill_9_then_resume(tmp_path):
    n = 40
    model, src, out = slow_job(tmp_path, n)
    cmd = [sys.executable, "-m", "skinseg", "infer", str(src), "--model", str(model), "-o", str(out), "-q",
           "--threads", "1", "--keep", "all", "--no-fill-holes"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_masks(out, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((out / "masks").glob("*.png"))
    assert 3 <= len(done) < n, "the run should have been killed part-way"
    for m in done:  # every visible output is complete
        assert read_mask(m).shape == (700, 900)
    assert not (out / "results.csv").exists()
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(list((out / "masks").glob("*.png"))) == n and not list(out.rglob(".*.part"))
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)
    expected = (1.0 - stripes(700, 900, seed=0)[..., 0] / 255.0) >= 0.5
    assert np.mean((read_mask(out / "masks" / "img00.png") > 0) == expected) > 0.97
    # those written before the kill and those after the resume: each as an uninterrupted run makes it
    assert_masks_as_uninterrupted(model, src, out, keep="all", fill_holes=False, threads=1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_results_marks_run_and_prints_the_resume_command(tmp_path, sig):
    model, src, out = slow_job(tmp_path, 30)
    # Ctrl-C as at a terminal: a suite started in the background (`cmd &`) passes SIGINT on ignored, and
    # Python, as it should, keeps ignoring it; the run is then the terminal's foreground job again.
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "infer", str(src), "--model", str(model), "-o", str(out),
                             "-q", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, COLUMNS="300"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_masks(out, 2)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted:" in output and "--resume" in output
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and 2 <= run["ok"] < 30
    assert len((out / "results.csv").read_text().splitlines()) == run["ok"] + 1


# For each option declared to change pixels, two values: the test uses the one this engine does not.
OTHER_VALUES = {"tile": [(32, 32), (48, 48)], "scale": [48, 40], "overlap": [0.25, 0.125], "tta": [True, False],
                "threshold": [0.3, 0.7], "keep": ["all", "largest"], "min_area": [5, 9],
                "fill_holes": [False, True], "blur": [1.5, 2.5], "graph_opt": ["basic", "extended"],
                "reduced_decode": [False, True], "output_kind": ["logits", "probability"], "input_max": [2.0, 3.0],
                "precision": ["bf16", "fp32"]}


def test_every_option_declared_to_change_pixels_has_a_resume_check():
    assert set(OTHER_VALUES) == set(EngineOptions.pixel_fields())  # a new pixel option needs its case here
    assert {"batch", "threads", "io_binding", "max_tiles"}.isdisjoint(EngineOptions.pixel_fields())


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_resume_refuses_outputs_made_with_another_value_of_any_pixel_option(tmp_path, name):
    from skinseg.inference.segmenter import Segmenter
    from skinseg.runner.batch import BatchRun
    from skinseg.runner.jobs import plan_jobs
    from skinseg.shared.errors import SkinsegError

    model = make_model(tmp_path / "dynamic.onnx", dtype="uint8", metadata={"skinseg.format": "2"})
    image = tmp_path / "a.jpg"
    image.write_bytes(encode(".jpg", stripes(90, 120, seed=1)))
    out = tmp_path / "o"
    first = Segmenter(model, "cpu", EngineOptions(tile=(64, 64), scale=None))
    BatchRun(first, out).run(plan_jobs([image]))
    value = next(v for v in OTHER_VALUES[name] if v != first.effective()[name] and
                 (name != "tile" or f"{v[0]}x{v[1]}" != first.effective()["tile"]))
    if name == "precision":  # bf16 needs the OpenVINO EP and bf16 units: the run is as if made with them
        second = Segmenter(model, "cpu", first.options)
        second.options = EngineOptions(**(first.options.as_dict() | {name: value}))
    else:
        second = Segmenter(model, "cpu", first.options.with_(**{name: value}))
    with pytest.raises(SkinsegError, match=f"made with another {name}"):
        BatchRun(second, out, resume=True).run(plan_jobs([image]))
    BatchRun(Segmenter(model, "cpu", first.options), out, resume=True).run(plan_jobs([image]))  # same: resumes


def test_resume_with_exact_decode_redoes_nothing_silently(tmp_path):
    """The case that slipped through a hand-kept list: --exact-decode after a reduced-decode run."""
    model = make_model(tmp_path / "m.onnx", dtype="uint8", metadata={"skinseg.format": "2", "skinseg.scale": "64"})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(encode(".jpg", stripes(600, 800, seed=2)))
    out = str(tmp_path / "o")
    args = ["infer", str(tmp_path / "in"), "--model", str(model), "--tile", "64", "-o", out, "-q"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, [*args, "--exact-decode", "--resume"], terminal_width=250)
    assert res.exit_code == 2 and "another reduced_decode" in res.output, res.output


def test_a_worker_killed_mid_write_leaves_no_temporary_file(tmp_path, model):
    """A Ray worker killed while writing a mask leaves `.<name>.XXXX.part`; Ray redoes the image on a new
    worker, and the run must end with the finished file only (CI once found the stray file this way)."""
    from skinseg.inference.segmenter import Segmenter
    from skinseg.runner.batch import BatchRun
    from skinseg.runner.jobs import plan_jobs
    from skinseg.runner.local import LocalPipeline

    class DiesMidWrite(LocalPipeline):
        def process(self, run, todo, summary, progress):
            (run.out / "masks" / ".a.png.k1ll3d.part").write_bytes(b"\x89PNG half")  # the dead worker's
            super().process(run, todo, summary, progress)

    src = _png(tmp_path / "a.png")
    out = tmp_path / "o"
    BatchRun(Segmenter(model, "cpu"), out, executor=DiesMidWrite()).run(plan_jobs([src]))
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png"]
