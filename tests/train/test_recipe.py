"""The GPU recipe runs end to end on the CPU with tiny settings: train -> export FP32 + INT8 -> eval."""

import json
import subprocess
import sys
from pathlib import Path

from tests.train.conftest import tiny_project

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_trains_exports_quantizes_and_evaluates(tmp_path):
    cfg = tiny_project(tmp_path, epochs=2)
    cfg.write_text(cfg.read_text().replace("patience = 0", "patience = 0\ndevice_augmentation = True\nema = 0.9\n"
                                                           'schedule = "cosine"'))
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe.py"), str(cfg), "--quiet",
                          "--int8-max-drop", "100"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    result = json.loads((run / "recipe.json").read_text())
    assert result["epochs"] == 2 and result["train_images_per_s"] > 0
    assert (run / "model.onnx").is_file() and (run / "model-int8.onnx").is_file()
    assert set(result["test"]) == {"model", "model-int8"}
    assert all(0 <= m["mean_jaccard"] <= 1 for m in result["test"].values())
    assert result["gpu"] is None  # no NVIDIA GPU here: nothing sampled, nothing invented
