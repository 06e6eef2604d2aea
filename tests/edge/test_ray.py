"""`skinseg infer --ray local`: the same outputs as local infer, a killed worker costs nothing.

Few and short: a local Ray instance takes seconds to start.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import encode, read_mask
from tests.cli_helpers import csv_rows
from tests.onnx_factory import stripes
from tests.realdata import FULLRES, ISIC256
from tests.running import assert_masks_as_uninterrupted, slow_job

runner = CliRunner()


def test_ray_local_matches_local_infer_and_reports_bad_inputs(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(ISIC256 / "test" / "images", src)
    for p in (FULLRES / "images").glob("*.jpg"):
        shutil.copy(p, src / p.name)
    (src / "broken.jpg").write_bytes(b"not an image")
    local, dist = tmp_path / "local", tmp_path / "ray"
    assert runner.invoke(app, ["infer", str(src), "-o", str(local), "-q", "--model", "int8"]).exit_code == 1
    res = runner.invoke(app, ["infer", str(src), "-o", str(dist), "-q", "--model", "int8", "--ray", "local",
                              "--workers", "2"])
    assert res.exit_code == 1, res.output
    rows = csv_rows(dist / "results.csv")
    assert len(rows) == 21 and sum(r["status"] == "ok" for r in rows) == 20
    assert "not a readable image" in next(r["error"] for r in rows if r["file"].endswith("broken.jpg"))
    for m in (local / "masks").glob("*.png"):
        np.testing.assert_array_equal(read_mask(m), read_mask(dist / "masks" / m.name))
    info = json.loads((dist / "run.json").read_text())
    assert info["ray"]["address"] == "local" and info["ray"]["workers"] == 2
    assert info["ray"]["providers"] == ["CPUExecutionProvider"] and info["ray"]["worker_processes"] >= 1
    # --ray with --resume: the images whose outputs are gone are redone on the cluster, the rest kept
    gone = sorted((dist / "masks").glob("*.png"))[:3]
    kept = {m.name: m.stat().st_mtime_ns for m in (dist / "masks").glob("*.png") if m not in gone}
    for m in gone:
        m.unlink()
    res = runner.invoke(app, ["infer", str(src), "-o", str(dist), "--model", "int8", "--ray", "local",
                              "--workers", "1", "--resume"], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output  # broken.jpg is still broken
    assert "17 resumed" in res.output, res.output
    for m in gone:
        np.testing.assert_array_equal(read_mask(m), read_mask(local / "masks" / m.name))
    assert all((dist / "masks" / name).stat().st_mtime_ns == t for name, t in kept.items())
    assert len(csv_rows(dist / "results.csv")) == 21


def test_a_killed_worker_is_replaced_and_every_image_is_done_once(tmp_path):
    import psutil

    model, src, out = slow_job(tmp_path, 24)
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "infer", str(src), "--model", str(model), "-o", str(out),
                             "-q", "--ray", "local", "--workers", "2", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    victim = None
    while time.time() < deadline and victim is None:
        if len(list((out / "masks").glob("*.png"))) >= 2:
            workers = [p for p in psutil.process_iter(["cmdline"])
                       if "SkinsegWorker" in " ".join(p.info["cmdline"] or [])]
            victim = workers[0] if workers else None
        time.sleep(0.05)
    assert victim is not None, "no Ray worker process found while the run was going"
    os.kill(victim.pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "object store" not in output and " E " not in output  # no error-level line from Ray on a good run
    rows = csv_rows(out / "results.csv")
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in src.glob("*.png"))  # each image exactly once
    assert all(r["status"] == "ok" for r in rows)
    assert_masks_as_uninterrupted(model, src, out, threads=1)  # also the images of the killed worker
    assert not list(out.rglob(".*.part"))


def test_ray_flags_without_ray_and_missing_extra_are_clear(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(encode(".png", stripes(40, 40)))
    res = runner.invoke(app, ["infer", str(img), "--workers", "2", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--ray" in res.output
