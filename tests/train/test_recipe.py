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
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe.py"), str(cfg), "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)  # the INT8 gate at its default limits
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "tiny"
    result = json.loads((run / "recipe.json").read_text())
    assert result["epochs"] == 2 and result["train_images_per_s"] > 0
    assert (run / "model.onnx").is_file()
    assert all(0 <= m["mean_jaccard"] <= 1 for m in result["test"].values())
    if result["int8_kept"]:  # the gate's promise, checked by eval: the tiny config's [test] split is its
        # [eval] split, where the gate measured at most 0.5 points of Jaccard lost against the masks
        assert (run / "model-int8.onnx").is_file() and set(result["test"]) == {"model", "model-int8"}
        lost = result["test"]["model"]["mean_jaccard"] - result["test"]["model-int8"]["mean_jaccard"]
        assert lost * 100 <= 0.5 + 1e-6, lost
    else:  # refused: said, nothing written, FP32 evaluated alone
        assert "INT8 refused by its gate" in res.stdout and not (run / "model-int8.onnx").exists()
        assert set(result["test"]) == {"model"}
    assert result["gpu"] is None  # no NVIDIA GPU here: nothing sampled, nothing invented
