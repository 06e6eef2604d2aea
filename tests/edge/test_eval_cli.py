"""`skinseg eval` on a small real set with a model whose output is known."""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import binarize, encode, read_image, read_mask
from tests.cli_helpers import TEST256, invoke, runner
from tests.onnx_factory import make_model
from tests.realdata import ISIC256

REAL = ISIC256 / "test"


@pytest.fixture
def real_set(tmp_path):
    images = sorted((REAL / "images").glob("*.jpg"))[:6]
    assert images, f"real data missing at {REAL}"
    for sub in ("images", "masks"):
        (tmp_path / "set" / sub).mkdir(parents=True)
    for p in images:
        shutil.copy(p, tmp_path / "set" / "images" / p.name)
        m = REAL / "masks" / f"{p.stem}_segmentation.png"
        shutil.copy(m, tmp_path / "set" / "masks" / m.name)
    return tmp_path / "set"


def test_eval_csv_matches_independent_computation(tmp_path, real_set):
    # known model: lesion where the red channel is below 128; two precisions stand-ins (float and uint8 input)
    m1 = make_model(tmp_path / "a.onnx", tile=(64, 64), metadata={"skinseg.format": "1", "skinseg.scale": "native"})
    m2 = make_model(tmp_path / "b.onnx", tile=(64, 64), dtype="uint8",
                    metadata={"skinseg.format": "1", "skinseg.scale": "native"})
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--images", str(real_set / "images"), "--masks", str(real_set / "masks"),
                                   "--model", str(m1), "--model", str(m2), "-o", str(out), "--keep", "all",
                                   "--no-fill-holes", "-q"])
    assert res.exit_code == 0, res.output
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["model"] for r in rows} == {"a", "b"}
    for r in rows:
        img = read_image(r["file"])
        truth = binarize(read_mask(real_set / "masks" / f"{Path(r['file']).stem}_segmentation.png"))
        pred = (1.0 - img[..., 0].astype(np.float32) / 255.0) >= 0.5
        inter, union = (pred & truth).sum(), (pred | truth).sum()
        assert float(r["jaccard"]) == pytest.approx(inter / union if union else 1.0, abs=1e-5)
        assert float(r["dice"]) == pytest.approx(2 * inter / (pred.sum() + truth.sum()), abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    a = summary["models"]["a"]
    assert a["scored"] == 6 and a["jaccard"]["mean"] == pytest.approx(np.mean([float(r["jaccard"]) for r in rows
                                                                               if r["model"] == "a"]))
    assert 0.05 <= a["best_threshold"]["threshold"] <= 0.95 and len(a["threshold_sweep"]) == 19
    for pic in ("worst.png", "worst-b.png", "jaccard_hist.png", "threshold_sweep.png", "risk_coverage.png"):
        assert (out / pic).stat().st_size > 1000, pic
    # the review flag on this split, at the engine's threshold: what the rows say, counted
    mine = [r for r in rows if r["model"] == "a"]
    review = a["review"]
    assert review["flagged"] == sum(r["review"] == "yes" for r in mine) == sum(
        float(r["confidence"]) < review["threshold"] for r in mine)
    assert review["failures"] == sum(float(r["jaccard"]) < 0.65 for r in mine)
    assert len(review["risk_coverage"]) == 11 and review["risk_coverage"][0]["mean_jaccard_kept"] == pytest.approx(
        a["jaccard"]["mean"])


def test_eval_reports_unscorable_inputs_and_goes_on(tmp_path, real_set):
    model = make_model(tmp_path / "a.onnx", tile=(64, 64))
    (real_set / "images" / "orphan.jpg").write_bytes(encode(".jpg", np.zeros((20, 20, 3), np.uint8)))
    (real_set / "images" / "wrong.jpg").write_bytes(encode(".jpg", np.zeros((20, 20, 3), np.uint8)))
    (real_set / "masks" / "wrong_segmentation.png").write_bytes(encode(".png", np.zeros((10, 10), np.uint8)))
    (real_set / "images" / "corrupt.jpg").write_bytes(b"nope")
    (real_set / "masks" / "corrupt_segmentation.png").write_bytes(encode(".png", np.zeros((10, 10), np.uint8)))
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--images", str(real_set / "images"), "--masks", str(real_set / "masks"),
                                   "--model", str(model), "-o", str(out), "-q", "--save-masks"])
    assert res.exit_code == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["a"]["scored"] == 6 and summary["models"]["a"]["errors"] == 2
    assert [u["file"].endswith("orphan.jpg") for u in summary["unscored_inputs"]] == [True]
    with open(out / "metrics.csv", newline="") as fh:
        errors = {Path(r["file"]).name: r["error"] for r in csv.DictReader(fh) if r["status"] == "error"}
    assert "size mismatch" in errors["wrong.jpg"] and "not a readable image" in errors["corrupt.jpg"]
    assert len(list((out / "masks" / "a").glob("*.png"))) == 6


def test_eval_config_without_test_section_is_a_usage_error(tmp_path):
    cfg = tmp_path / "c.ini"
    cfg.write_text("[train]\nepochs = 1\n")
    res = CliRunner().invoke(app, ["eval", str(cfg), "--model", "x.onnx"])
    assert res.exit_code == 2 and "[test] image_datapath is not set" in res.output


def test_infer_and_eval_with_one_config_run_the_same_engine_after_mask_is_edited(tmp_path):
    """[mask] reaches the engine by one route: the model records it at export; an edit afterwards is
    applied by infer --config and eval CONFIG alike."""
    run = tmp_path / "runs" / "cfg"
    run.mkdir(parents=True)
    (run / "config.ini").write_text("[train]\n")
    (run / "state.json").write_text('{"epoch": 1}')
    make_model(run / "model-int8.onnx", tile=(64, 64), box=9,
               metadata={"skinseg.format": "2", "skinseg.postprocess.threshold": "0.5"})
    images = sorted((REAL / "images").glob("*.jpg"))[:6]
    masks = {}
    for threshold in ("0.2", "0.8"):  # as edited after export
        cfg = tmp_path / "cfg.ini"
        cfg.write_text(f'[train]\nruns_dir = "runs"\nname = "cfg"\n[test]\nimage_datapath = "{REAL}/images"\n'
                       f'mask_datapath = "{REAL}/masks"\n[mask]\nthreshold = {threshold}\n')
        out = tmp_path / f"infer-{threshold}"
        res = runner.invoke(app, ["infer", *map(str, images), "--config", str(cfg), "-o", str(out), "-q"])
        assert res.exit_code == 0, res.output
        ev = tmp_path / f"eval-{threshold}"
        res = runner.invoke(app, ["eval", str(cfg), "-o", str(ev), "--save-masks", "-q"], terminal_width=250)
        assert res.exit_code == 0, res.output
        for img in images:
            infer_mask = read_mask(out / "masks" / f"{img.stem}.png")
            eval_mask = read_mask(next((ev / "masks").glob(f"*/{img.stem}.png")))
            assert np.array_equal(infer_mask, eval_mask), (threshold, img.name)
        masks[threshold] = [read_mask(out / "masks" / f"{img.stem}.png") for img in images]
    assert any(not np.array_equal(a, b) for a, b in zip(masks["0.2"], masks["0.8"], strict=True))  # the edit counts


def test_eval_names_every_unscored_input_on_screen(tmp_path):
    import shutil

    shutil.copytree(ISIC256 / "test", tmp_path / "t")
    (tmp_path / "t" / "images" / "orphan.jpg").write_bytes(encode(".jpg", np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "t" / "masks" / "lonely_segmentation.png").write_bytes(encode(".png", np.zeros((8, 8), np.uint8)))
    model = make_model(tmp_path / "m.onnx", tile=(64, 64))
    res = runner.invoke(app, ["eval", "--images", str(tmp_path / "t"), "--model", str(model),
                              "-o", str(tmp_path / "ev"), "-q"], terminal_width=300)
    assert res.exit_code == 1
    assert "not scored" in res.output and "orphan.jpg: no matching mask" in res.output
    assert "lonely_segmentation.png: mask without an image" in res.output


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


def test_eval_scores_0_1_masks_like_0_255_masks_and_says_so_once(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TEST256, data)
    for p in (data / "masks").glob("*.png"):
        cv2.imwrite(str(p), (cv2.imread(str(p), 0) > 127).astype(np.uint8))
    a = invoke("eval", "--images", str(TEST256), "-o", str(tmp_path / "a"), "-q", "--worst", "0", "--no-tta")
    b = invoke("eval", "--images", str(data / "images"), "--masks", str(data / "masks"), "-o", str(tmp_path / "b"),
            "-q", "--worst", "0", "--no-tta")
    assert a.exit_code == b.exit_code == 0
    import json

    ja = json.loads((tmp_path / "a" / "summary.json").read_text())["models"]["skinseg-int8"]["jaccard"]["mean"]
    jb = json.loads((tmp_path / "b" / "summary.json").read_text())["models"]["skinseg-int8"]["jaccard"]["mean"]
    assert ja == jb > 0.8
    assert b.output.count("levels 0/1") == 1


def test_every_model_given_is_scored_under_its_own_label(tmp_path):
    res = invoke("eval", "--images", str(TEST256), "--model", "int8", "--model", "int8", "-o", str(tmp_path / "e"),
                 "-q", "--worst", "0", "--no-tta")
    assert res.exit_code == 0, res.output
    import json

    assert sorted(json.loads((tmp_path / "e" / "summary.json").read_text())["models"]) == ["skinseg-int8",
                                                                                          "skinseg-int8~2"]


def test_save_masks_names_never_collide(tmp_path):
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    src = sorted((TEST256 / "images").glob("*.jpg"))[0]
    shutil.copy(src, data / "images" / "a.jpg")
    cv2.imwrite(str(data / "images" / "a.png"), cv2.imread(str(src)))
    mask = TEST256 / "masks" / f"{src.stem}_segmentation.png"
    shutil.copy(mask, data / "masks" / "a_segmentation.png")
    res = invoke("eval", "--images", str(data / "images"), "--masks", str(data / "masks"), "-o", str(tmp_path / "e"),
              "--save-masks", "-q", "--worst", "0")
    saved = list((tmp_path / "e" / "masks").rglob("*.png"))
    scored = [r for r in (tmp_path / "e" / "metrics.csv").read_text().splitlines()[1:] if ",ok," in r]
    assert len(saved) == len(scored), (res.output, saved, scored)


def test_eval_into_a_busy_folder_does_not_suggest_resume(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    res = invoke("eval", "--images", str(TEST256), "-o", str(tmp_path / "busy"), "-q")
    assert res.exit_code == 2 and "--exist-ok" in res.output and "--resume" not in res.output
