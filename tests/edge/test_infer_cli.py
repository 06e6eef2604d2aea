"""The `skinseg infer` output contract, bad inputs, resume and shards."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import encode, read_image, read_mask
from tests.onnx_factory import expected_probability, make_model, stripes
from tests.realdata import FULLRES

runner = CliRunner()


@pytest.fixture
def model(tmp_path):
    return make_model(tmp_path / "model.onnx", tile=(64, 64), dtype="uint8",
                      metadata={"skinseg.format": "1", "skinseg.scale": "native"})


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i, (h, w) in enumerate([(120, 160), (77, 301), (200, 50)]):
        (d / f"img{i}.png").write_bytes(encode(".png", stripes(h, w, seed=i)))
    return d


def _rows(out):
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_outputs_contract(tmp_path, model, images):
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(images), "--model", str(model), "-o", str(out), "--provider", "cpu",
                              "--keep", "all", "--no-fill-holes"])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert [Path(r["file"]).name for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert set(rows[0]) >= {"file", "status", "width", "height", "lesion_area_px", "lesion_fraction", "bbox",
                            "components", "seconds", "error"}
    for r in rows:
        src = read_image(r["file"])
        mask = read_mask(out / "masks" / (Path(r["file"]).stem + ".png"))
        assert mask.shape == src.shape[:2] and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, expected_probability(src) >= 0.5)
        assert r["status"] == "ok" and int(r["lesion_area_px"]) == (mask == 255).sum()
        assert (out / "overlays" / (Path(r["file"]).stem + ".jpg")).is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["ok"] == 3
    assert run["engine"]["providers"] == ["CPUExecutionProvider"] and len(run["engine"]["sha256"]) == 64
    assert "onnxruntime" in run["versions"]
    assert not list(out.rglob("*.part")) and not (out / ".results.partial.csv").exists()


def test_bad_inputs_are_reported_and_run_goes_on(tmp_path, model, images):
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is not an image")
    (images / "trunc.jpg").write_bytes(encode(".jpg", stripes(100, 100))[:200])
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(images), str(tmp_path / "nope.png"), "--model", str(model),
                              "-o", str(out), "-q"])
    assert res.exit_code == 1
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    assert rows["img0.png"]["status"] == "ok"
    for bad, why in [("empty.jpg", "empty file"), ("text.jpg", "not a readable image"),
                     ("trunc.jpg", ""), ("nope.png", "no such file")]:
        assert rows[bad]["status"] == "error" and why in rows[bad]["error"], rows[bad]
    assert not (out / "masks" / "empty.png").exists()


def test_usage_errors_exit_2_with_one_line(tmp_path, model, images):
    res = runner.invoke(app, ["infer", str(images), "--model", str(tmp_path / "missing.onnx")])
    assert res.exit_code == 2 and "model file not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["infer", str(tmp_path / "nothing-here"), "--model", str(model)])
    assert res.exit_code == 2 and "no images found" in res.output
    res = runner.invoke(app, ["infer", str(images), "--model", str(model), "--shard", "3/2"])
    assert res.exit_code == 2 and "--shard" in res.output




def test_shards_partition_the_inputs(tmp_path, model, images):
    out = tmp_path / "out"
    seen = []
    for k in (1, 2):
        res = runner.invoke(app, ["infer", str(images), "--model", str(model), "-o", str(out), "-q",
                                  "--shard", f"{k}/2"])
        assert res.exit_code == 0
        with open(out / f"results-{k}-of-2.csv", newline="") as fh:
            seen.append({Path(r["file"]).name for r in csv.DictReader(fh)})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {"img0.png", "img1.png", "img2.png"}


def test_duplicate_stems_get_distinct_outputs(tmp_path, model):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "same.png").write_bytes(encode(".png", stripes(40, 40)))
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(model),
                              "-o", str(out), "-q"])
    assert res.exit_code == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["same.png", "same~2.png"]


def test_real_fullres_images_keep_their_size(tmp_path, model):
    picks = sorted((FULLRES / "images").glob("*.jpg"))[:2]
    assert picks, f"real data missing at {FULLRES}"
    d = tmp_path / "real"
    d.mkdir()
    for p in picks:
        shutil.copy(p, d / p.name)
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(d), "--model", str(model), "-o", str(out), "--scale", "512", "-q"])
    assert res.exit_code == 0, res.output
    for p in picks:
        assert read_mask(out / "masks" / f"{p.stem}.png").shape == read_image(p).shape[:2]


def test_seed_config_supplies_inputs_output_and_mask_options(tmp_path, model, images):
    cfg = tmp_path / "seed.config"
    cfg.write_text(f'[infer]\nimages_dir = "{images.name}"\noutput_dir = "seed-out"\nmerged_dir = "merged"\n'
                   '[mask]\nblur = True\nbinarize = False\nthreshold = 128\n')
    res = runner.invoke(app, ["infer", "--config", str(cfg), "--model", str(model), "-q"])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "seed-out" / "run.json").read_text())
    post = run["engine"]["postprocess"]
    assert post["blur"] == 2.0 and post["threshold"] == pytest.approx(128 / 255)
    assert len(list((tmp_path / "seed-out" / "masks").glob("*.png"))) == 3
    res = runner.invoke(app, ["infer", "--config", str(cfg), "--model", str(model), "-q", "--threshold", "0.3",
                              "-o", str(tmp_path / "flag-out")])
    assert json.loads((tmp_path / "flag-out" / "run.json").read_text())["engine"]["postprocess"]["threshold"] == 0.3
