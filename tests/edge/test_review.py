"""The review flag's score on probability maps whose answer is known, the threshold by default and by
flag, and the flag everywhere a result appears."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.inference.options import EngineOptions
from skinseg.inference.review import DEFAULT_REVIEW_THRESHOLD, confidence, needs_review
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import encode
from tests.cli_helpers import csv_rows
from tests.onnx_factory import make_model, stripes

runner = CliRunner()


def _disc(blur: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:192, :256]
    p = (((yy - 96) ** 2 + (xx - 128) ** 2) <= 60**2).astype(np.float32)
    return cv2.GaussianBlur(p, (0, 0), blur) if blur else p


def test_a_crisp_lesion_is_confident_a_blurred_or_scattered_one_is_not():
    assert confidence(_disc()) == 1.0
    assert confidence(_disc(1.0)) > 0.9  # a soft edge one pixel wide
    assert confidence(_disc(12.0)) < DEFAULT_REVIEW_THRESHOLD < confidence(_disc(1.0))
    rng = np.random.default_rng(0)
    scattered = cv2.GaussianBlur((rng.random((192, 256)) > 0.7).astype(np.float32), (0, 0), 2.0)
    assert confidence(scattered) < DEFAULT_REVIEW_THRESHOLD
    assert confidence(np.zeros((192, 256), np.float32)) == 1.0  # clearly no lesion
    assert confidence(np.full((192, 256), 0.45, np.float32)) == 0.0  # undecided everywhere, nothing found


def test_the_threshold_is_the_default_unless_given():
    assert needs_review(0.5) and not needs_review(0.9)
    assert not needs_review(0.5, 0.4) and needs_review(0.95, 1.0)
    with pytest.raises(SkinsegError, match="--review-threshold 1.5"):
        EngineOptions(review_threshold=1.5)
    assert "review_threshold" not in EngineOptions.pixel_fields()  # masks are the same whatever it is


def test_results_run_json_and_resume_carry_the_flag(tmp_path):
    model = make_model(tmp_path / "soft.onnx", tile=(64, 64), box=9, metadata={"skinseg.format": "2",
                                                                              "skinseg.scale": "native"})
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"i{i}.png").write_bytes(encode(".png", stripes(120, 160, seed=i)))
    out = tmp_path / "o"
    args = ["infer", str(src), "--model", str(model), "-o", str(out), "-q"]
    assert runner.invoke(app, [*args, "--review-threshold", "1"]).exit_code == 0
    rows = csv_rows(out / "results.csv")
    assert all(0 <= float(r["confidence"]) < 1 and r["review"] == "yes" for r in rows), rows
    assert json.loads((out / "run.json").read_text())["flagged_for_review"] == 3
    res = runner.invoke(app, [*args, "--resume", "--review-threshold", "0"])  # kept outputs, the new threshold
    assert res.exit_code == 0, res.output
    assert [r["review"] for r in csv_rows(out / "results.csv")] == ["no"] * 3
    assert json.loads((out / "run.json").read_text())["flagged_for_review"] == 0
