"""Robustness, round two: real folders, real names, changed models, two runs at once, bombs of every
format, broken models. Each test failed before its fix."""

import csv
import fcntl
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.config import load_config
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import encode, load_image, probe_size
from tests.onnx_factory import make_model, stripes

runner = CliRunner()


@pytest.fixture
def model(tmp_path):
    return make_model(tmp_path / "model.onnx", tile=(64, 64), dtype="uint8",
                      metadata={"skinseg.format": "2", "skinseg.scale": "native"})


def _png(path: Path, seed: int = 0) -> Path:
    path.write_bytes(encode(".png", stripes(40, 60, seed=seed)))
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_recursive_infer_never_reads_back_its_own_outputs(tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        _png(tmp_path / f"img{i}.png", i)
    for _ in range(3):
        assert runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-q"]).exit_code == 0
    out = tmp_path / "runs" / "infer"
    assert [len(_rows(d / "results.csv")) for d in sorted(out.iterdir())] == [3, 3, 3]
    res = runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-o", "mine", "-q"])
    assert res.exit_code == 0 and len(_rows(tmp_path / "mine" / "results.csv")) == 3
    res = runner.invoke(app, ["infer", ".", "-r", "--model", str(model), "-o", "mine", "-q", "--resume"])
    assert res.exit_code == 0
    assert len(_rows(tmp_path / "mine" / "results.csv")) == 3




def test_long_and_non_utf8_names_are_handled_not_fatal(tmp_path, model):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / ("x" * 245 + ".png"))
    bad = os.fsencode(str(src)) + b"/caf\xe9.png"  # Latin-1 name: not valid UTF-8
    with open(bad, "wb") as fh:
        fh.write(encode(".png", stripes(40, 60)))
    _png(src / "ok.png")
    out = tmp_path / "o"
    res = runner.invoke(app, ["infer", str(src), "--model", str(model), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = _rows(out / "results.csv")
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
    assert len(_rows(tmp_path / "e" / "metrics.csv")) == 2


def test_deduplicated_names_never_collide(tmp_path, model):
    for name in ("X.png", "x.jpg", "x.bmp", "x~2.png"):
        (tmp_path / name).write_bytes(encode(Path(name).suffix, stripes(40, 60, seed=len(name))))
    out = tmp_path / "o"
    res = runner.invoke(app, ["infer", *[str(tmp_path / n) for n in ("X.png", "x.jpg", "x.bmp", "x~2.png")],
                              "--model", str(model), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    masks = [r["mask"] for r in _rows(out / "results.csv")]
    assert len({m.lower() for m in masks}) == 4 and len(list((out / "masks").glob("*.png"))) == 4


def _webp_vp8x(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + \
        (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _tiff(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def test_pixel_limit_holds_for_webp_and_tiff_from_their_headers(tmp_path, model):
    assert probe_size(_webp_vp8x(16383, 16383)) == (16383, 16383)
    assert probe_size(_tiff(15000, 15000)) == (15000, 15000)
    real = encode(".webp", stripes(30, 50))
    assert probe_size(real) == (50, 30)
    for name, data in (("bomb.webp", _webp_vp8x(16383, 16383)), ("bomb.tif", _tiff(15000, 15000))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match="above the 200 MP limit"):
            load_image(tmp_path / name)
    res = runner.invoke(app, ["infer", str(tmp_path / "bomb.webp"), str(tmp_path / "bomb.tif"), "--model", str(model),
                              "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    assert [r["status"] for r in _rows(tmp_path / "o" / "results.csv")] == ["error", "error"]


def test_opencv_pixel_guard_is_set_before_cv2_whatever_the_import_order():
    import subprocess
    import sys

    code = "import skinseg, cv2, os; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "200000000"


def test_fifo_and_oversized_files_are_error_rows_not_hangs(tmp_path, model, monkeypatch):
    os.mkfifo(tmp_path / "pipe.jpg")
    _png(tmp_path / "big.png")
    monkeypatch.setenv("SKINSEG_MAX_BYTES", "100")
    res = runner.invoke(app, ["infer", str(tmp_path), "--model", str(model), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    errors = {Path(r["file"]).name: r["error"] for r in _rows(tmp_path / "o" / "results.csv")}
    assert "not a regular file" in errors["pipe.jpg"] and "file limit" in errors["big.png"]


def _nan_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nan = numpy_helper.from_array(np.array(np.nan, np.float32), "nan")
    g = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["m"], axes=[3], keepdims=1),
                           helper.make_node("Mul", ["m", "nan"], ["mask"])], "nan",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
                          [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "H", "W", 1])], [nan])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_non_finite_model_output_is_a_model_error(tmp_path):
    _png(tmp_path / "a.png")
    res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(_nan_model(tmp_path / "n.onnx")),
                              "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
    assert res.exit_code == 2 and "NaN or infinite" in res.output


def test_flag_errors_are_reported_once(tmp_path, model):
    _png(tmp_path / "a.png")
    for args, msg in ((["--blur", "1e9"], "blur"), (["--overlay-max", "-1"], "--overlay-max")):
        res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), *args,
                                  "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
        assert res.exit_code == 2 and msg in res.output and not (tmp_path / "o" / "results.csv").exists()


def test_a_second_run_into_a_busy_folder_fails_at_once(tmp_path, model):
    _png(tmp_path / "a.png")
    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".skinseg.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(model), "-o", str(out), "-q",
                                  "--exist-ok"], terminal_width=250)
    assert res.exit_code == 2 and "another skinseg run is writing" in res.output




def test_results_cells_cannot_start_a_spreadsheet_formula(tmp_path, model):
    _png(tmp_path / "=HYPERLINK(1).png")
    out = tmp_path / "o"
    assert runner.invoke(app, ["infer", str(tmp_path / "=HYPERLINK(1).png"), "--model", str(model),
                               "-o", str(out), "-q"]).exit_code == 0
    files = [r["file"] for r in _rows(out / "results.csv")]
    assert not any(f.startswith("=") for f in files)


@pytest.mark.parametrize(
    ("text", "check"),
    [("\ufeff[train]\nepochs = 3\n", lambda c: c.train.epochs == 3),
     ("[mask]\nthreshold = 1\n", lambda c: c.mask.threshold == pytest.approx(1 / 255)),
     ("[mask]\nthreshold = 255\n", lambda c: c.mask.threshold == 1.0)],
)
def test_config_accepts_what_its_docs_allow(tmp_path, text, check):
    p = tmp_path / "c.ini"
    p.write_text(text, encoding="utf-8")
    assert check(load_config(p))


@pytest.mark.parametrize(
    ("text", "message"),
    [("[augmentor]\nalpah = 1e999\n", "alpah"), ("[augmentor]\nalpah = 1e300\n", "between 0 and 10000"),
     ('[train]\nname = "../../x"\n', "name = ../../x"), ("[model]\nworking_scale = 100000000\n", "working_scale"),
     ("[model]\nimage_width = 200\n", "multiple of 16")],
)
def test_config_bounds_every_number_and_the_run_name(tmp_path, text, message):
    p = tmp_path / "c.ini"
    p.write_text(text)
    with pytest.raises(SkinsegError, match=message):
        load_config(p)


def test_seed_config_means_resnet50_with_the_standard_decoder(tmp_path):
    p = tmp_path / "c.ini"
    p.write_text('[model]\nmodel = "TensorflowDeepLabV3Plus"\n')
    cfg = load_config(p)
    assert (cfg.model.backbone, cfg.model.decoder) == ("resnet50", "standard")
    p.write_text('[model]\nmodel = "TensorflowDeepLabV3Plus"\nbackbone = "mobilenetv2"\n')
    assert load_config(p).model.backbone == "mobilenetv2"




def test_runs_write_nothing_to_the_home_folder(tmp_path, model):
    """ONNX Runtime's telemetry database and matplotlib's cache stay out of ~ (eval draws plots)."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    _png(tmp_path / "a.png")
    (tmp_path / "a_segmentation.png").write_bytes(encode(".png", np.zeros((40, 60), np.uint8)))
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "MPLCONFIGDIR")} | {"HOME": str(home)}
    for args in (["infer", str(tmp_path / "a.png"), "-o", str(tmp_path / "o")],
                 ["eval", "--images", str(tmp_path), "-o", str(tmp_path / "e")]):
        res = subprocess.run([sys.executable, "-m", "skinseg", *args, "--model", str(model), "-q"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode in (0, 1), res.stderr
    assert list(home.rglob("*")) == []


def test_a_model_that_fails_on_every_tile_is_one_model_error(tmp_path):
    """A Reshape that only fits 64x64 inputs, run with 32 px tiles: one line, exit 2, not a row per image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([-1, 64, 64, 1], np.int64), "shape")
    g = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["m"], axes=[3], keepdims=1),
                           helper.make_node("Reshape", ["m", "shape"], ["mask"])], "bad",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
                          [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "H", "W", 1])], [shape])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "bad.onnx"))
    for i in range(3):
        _png(tmp_path / f"a{i}.png", i)
    res = runner.invoke(app, ["infer", str(tmp_path), "--model", str(tmp_path / "bad.onnx"), "--tile", "32",
                              "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
    assert res.exit_code == 2 and "the model failed on a [" in res.output, res.output
    assert res.output.count("error:") == 1
