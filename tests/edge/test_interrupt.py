"""kill -9 in the middle of `skinseg infer`, then --resume: outputs are complete or absent."""

import csv
import os
import signal
import subprocess
import sys

import numpy as np

from skinseg.shared.images import read_mask
from tests.onnx_factory import stripes
from tests.running import slow_job, wait_for_masks


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
