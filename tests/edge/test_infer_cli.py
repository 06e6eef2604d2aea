"""The `skinseg infer` output contract, bad inputs, resume and shards."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skinseg.cli import app
from skinseg.shared.images import encode, read_image, read_mask
from skinseg.shared.synthetic import png_header
from tests.cli_helpers import (
    SAMPLE,
    SAMPLES,
    TEST256,
    csv_rows,
    invoke,
    run_skinseg,
    runner,
    small_png,
)
from tests.onnx_factory import expected_probability, stripes
from tests.realdata import FULLRES, FULLRES_IMAGES


def test_outputs_contract(tmp_path, model, images):
    out = tmp_path / "out"
    res = runner.invoke(app, ["infer", str(images), "--model", str(model), "-o", str(out), "--provider", "cpu",
                              "--keep", "all", "--no-fill-holes"])
    assert res.exit_code == 0, res.output
    rows = csv_rows(out)
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
    rows = {Path(r["file"]).name: r for r in csv_rows(out)}
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
    picks = FULLRES_IMAGES[:2]
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


def test_no_lock_file_stays_and_quiet_keeps_where_the_results_are(tmp_path):
    res = run_skinseg("infer", str(SAMPLES), "-o", str(tmp_path / "out"), "-q", cwd=tmp_path)
    assert res.returncode == 0
    assert not list((tmp_path / "out").glob(".skinseg*.lock"))
    assert res.stdout.strip().splitlines() == [f"results in {tmp_path / 'out'} (4 ok, 0 failed)"]
    ev = run_skinseg("eval", "--images", str(TEST256), "-o", str(tmp_path / "ev"), "-q", "--worst", "0", cwd=tmp_path)
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
    res = run_skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "--scale", "native", "--no-tta", "-o",
                  str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 0
    assert "--scale native: this model works at 256 px" in res.stderr and "tiles instead of 1" in res.stderr
    quiet = run_skinseg("infer", str(SAMPLES / "ISIC_0000002.jpg"), "--scale", "300", "-o", str(tmp_path / "p"),
                    cwd=tmp_path)
    assert "works at 256 px" not in quiet.stderr  # within 2x: no warning


def test_long_and_non_utf8_names_are_handled_not_fatal(tmp_path, model):
    src = tmp_path / "in"
    src.mkdir()
    small_png(src / ("x" * 245 + ".png"))
    bad = os.fsencode(str(src)) + b"/caf\xe9.png"  # Latin-1 name: not valid UTF-8
    with open(bad, "wb") as fh:
        fh.write(encode(".png", stripes(40, 60)))
    small_png(src / "ok.png")
    out = tmp_path / "o"
    res = runner.invoke(app, ["infer", str(src), "--model", str(model), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = csv_rows(out / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert any("\\xe9" in r["file"] for r in rows)
    assert all(len(Path(r["mask"]).name.encode()) < 255 for r in rows)
    data = tmp_path / "data"
    data.mkdir()
    for stem in (b"caf\xe9", b"ok"):
        base = os.fsencode(str(data)) + b"/" + stem
        with open(base + b".png", "wb") as fh:
            fh.write(encode(".png", stripes(40, 60)))
        with open(base + b"_segmentation.png", "wb") as fh:
            fh.write(encode(".png", np.zeros((40, 60), np.uint8)))
    ev = runner.invoke(app, ["eval", "--images", str(data), "--model", str(model), "-o", str(tmp_path / "e"), "-q"])
    assert ev.exit_code == 0, ev.output
    assert len(csv_rows(tmp_path / "e" / "metrics.csv")) == 2


def test_deduplicated_names_never_collide(tmp_path, model):
    for name in ("X.png", "x.jpg", "x.bmp", "x~2.png"):
        (tmp_path / name).write_bytes(encode(Path(name).suffix, stripes(40, 60, seed=len(name))))
    out = tmp_path / "o"
    res = runner.invoke(app, ["infer", *[str(tmp_path / n) for n in ("X.png", "x.jpg", "x.bmp", "x~2.png")],
                              "--model", str(model), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    masks = [r["mask"] for r in csv_rows(out / "results.csv")]
    assert len({m.lower() for m in masks}) == 4 and len(list((out / "masks").glob("*.png"))) == 4


def test_flag_errors_are_reported_once(tmp_path, model):
    small_png(tmp_path / "a.png")
    for args, msg in ((["--blur", "1e9"], "blur"), (["--overlay-max", "-1"], "--overlay-max")):
        res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), *args,
                                  "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
        assert res.exit_code == 2 and msg in res.output and not (tmp_path / "o" / "results.csv").exists()


def test_results_cells_cannot_start_a_spreadsheet_formula(tmp_path, model):
    small_png(tmp_path / "=HYPERLINK(1).png")
    out = tmp_path / "o"
    assert runner.invoke(app, ["infer", str(tmp_path / "=HYPERLINK(1).png"), "--model", str(model),
                               "-o", str(out), "-q"]).exit_code == 0
    files = [r["file"] for r in csv_rows(out / "results.csv")]
    assert not any(f.startswith("=") for f in files)


def test_a_non_ascii_name_on_an_ascii_terminal_is_not_a_failure(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(SAMPLE, images / "läsion-é.jpg")
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(images), "-o", str(tmp_path / "o")],
                         capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "200"},
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "masks" / "läsion-é.png").is_file()


def test_one_bad_image_among_good_ones_costs_one_row(tmp_path):
    images = tmp_path / "i"
    images.mkdir()
    shutil.copy(SAMPLE, images)
    (images / "bomb.png").write_bytes(png_header(40000, 40000))
    res = invoke("infer", str(images), "-o", str(tmp_path / "o"), "-q")
    assert res.exit_code == 1
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and sum(",ok," in r for r in rows) == 1


def test_the_table_shows_the_whole_reason_on_a_narrow_terminal(tmp_path, model):
    import re

    good = small_png(tmp_path / "good.png")
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(SAMPLE.read_bytes()[:2000])
    res = runner.invoke(app, ["infer", str(good), str(bad), "--model", str(model), "-o", str(tmp_path / "o")],
                        terminal_width=80)
    assert res.exit_code == 1, res.output
    flat = " ".join(re.sub(r"[│┃|]", " ", res.output).split())
    assert "not a readable image (corrupt, truncated or unsupported format)" in flat, res.output


def test_pixel_spacing_gives_millimetres_in_results_and_resume_follows_it(tmp_path, model):

    img = small_png(tmp_path / "a.png")
    out = tmp_path / "o"
    assert runner.invoke(app, ["infer", str(img), "--model", str(model), "-o", str(out), "-q"]).exit_code == 0
    row = csv_rows(out / "results.csv")[0]
    assert float(row["diameter_px"]) > 0 and row["area_mm2"] == "" and row["diameter_mm"] == ""  # never guessed
    res = runner.invoke(app, ["infer", str(img), "--model", str(model), "-o", str(out), "-q", "--resume",
                              "--pixel-spacing", "0.02"])
    assert res.exit_code == 0, res.output
    row = csv_rows(out / "results.csv")[0]
    assert float(row["area_mm2"]) == pytest.approx(int(row["lesion_area_px"]) * 0.02**2, rel=1e-3)
    assert float(row["diameter_mm"]) == pytest.approx(float(row["diameter_px"]) * 0.02, abs=2e-3)
    assert json.loads((out / "run.json").read_text())["options"]["pixel_spacing_mm"] == 0.02
    bad = runner.invoke(app, ["infer", str(img), "--model", str(model), "--pixel-spacing", "nan"], terminal_width=250)
    assert bad.exit_code == 2 and "--pixel-spacing nan" in bad.output
