"""Robustness, round three: silent wrong scores, own outputs as inputs, planted links, unbounded values,
tracebacks, misleading messages, the quantize gate and signals. Each test failed before its fix."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import read_binary_mask
from tests.onnx_factory import make_model

ROOT = Path(__file__).resolve().parents[2]
TEST256 = ROOT / "tests" / "data" / "isic" / "isic256" / "test"
SAMPLE = ROOT / "samples" / "ISIC_0000002.jpg"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250"})


# -- 1. silently wrong results or lost work ---------------------------------------------------------------
@pytest.mark.parametrize(("values", "dtype", "lesion", "note"), [
    ((0, 255), np.uint8, 255, None), ((0, 1), np.uint8, 1, "levels 0/1"), ((0, 1), np.uint16, 1, "16-bit"),
    ((0, 65535), np.uint16, 65535, "16-bit"), ((10, 200), np.uint8, 200, "levels 10/200"),
])
def test_two_level_masks_are_read_by_one_rule(tmp_path, values, dtype, lesion, note):
    m = np.full((20, 30), values[0], dtype)
    m[5:15, 10:20] = values[1]
    cv2.imwrite(str(tmp_path / "m.png"), m)
    got, said = read_binary_mask(tmp_path / "m.png")
    assert got.sum() == 100 and got[10, 15]
    assert (said is None) if note is None else (note in said)


def test_a_label_map_or_a_single_grey_value_is_an_error_not_an_empty_mask(tmp_path):
    labels = np.arange(200, dtype=np.uint8).reshape(10, 20) % 11  # values 0..10
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    with pytest.raises(InputError, match="label map"):
        read_binary_mask(tmp_path / "labels.png")
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((10, 10), 7, np.uint8))
    with pytest.raises(InputError, match="only the value 7"):
        read_binary_mask(tmp_path / "grey.png")


def test_eval_scores_0_1_masks_like_0_255_masks_and_says_so_once(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TEST256, data)
    for p in (data / "masks").glob("*.png"):
        cv2.imwrite(str(p), (cv2.imread(str(p), 0) > 127).astype(np.uint8))
    a = cli("eval", "--images", str(TEST256), "-o", str(tmp_path / "a"), "-q", "--worst", "0", "--no-tta")
    b = cli("eval", "--images", str(data / "images"), "--masks", str(data / "masks"), "-o", str(tmp_path / "b"),
            "-q", "--worst", "0", "--no-tta")
    assert a.exit_code == b.exit_code == 0
    import json

    ja = json.loads((tmp_path / "a" / "summary.json").read_text())["models"]["skinseg-int8"]["jaccard"]["mean"]
    jb = json.loads((tmp_path / "b" / "summary.json").read_text())["models"]["skinseg-int8"]["jaccard"]["mean"]
    assert ja == jb > 0.8
    assert b.output.count("levels 0/1") == 1


def test_every_model_given_is_scored_under_its_own_label(tmp_path):
    res = cli("eval", "--images", str(TEST256), "--model", "int8", "--model", "int8", "-o", str(tmp_path / "e"), "-q",
              "--worst", "0", "--no-tta")
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
    res = cli("eval", "--images", str(data / "images"), "--masks", str(data / "masks"), "-o", str(tmp_path / "e"),
              "--save-masks", "-q", "--worst", "0")
    saved = list((tmp_path / "e" / "masks").rglob("*.png"))
    scored = [r for r in (tmp_path / "e" / "metrics.csv").read_text().splitlines()[1:] if ",ok," in r]
    assert len(saved) == len(scored), (res.output, saved, scored)


# -- 2. own outputs never become inputs ----------------------------------------------------------------------
def test_an_output_folder_that_is_or_holds_an_input_is_refused_before_writing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(SAMPLE, images)
    before = sorted(p.name for p in images.iterdir())
    for out in (images, tmp_path):
        res = cli("infer", str(images), "-o", str(out), "--exist-ok", "-q")
        assert res.exit_code == 2 and "holds, the input" in res.output
    assert sorted(p.name for p in images.iterdir()) == before  # not even a marker
    res = cli("eval", "--images", str(TEST256), "-o", str(TEST256 / "images"), "--exist-ok", "-q")
    assert res.exit_code == 2 and "holds, the input" in res.output


# -- 3. nothing written through a planted link ------------------------------------------------------------------
@pytest.mark.parametrize("planted", [".skinseg-output", ".skinseg.lock", "masks", "overlays"])
def test_nothing_is_written_through_a_link_in_the_output_folder(tmp_path, planted):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    target = elsewhere if planted in ("masks", "overlays") else elsewhere / "file"
    (out / planted).symlink_to(target)
    res = cli("infer", str(SAMPLE), "-o", str(out), "--exist-ok", "-q")
    assert res.exit_code == 2 and "symbolic link" in res.output
    assert not list(elsewhere.iterdir())


# -- 4. unbounded values are usage errors before work -----------------------------------------------------------
@pytest.mark.parametrize(("args", "words"), [
    (["--scale", "65536"], "--scale 65536"), (["--tile", "30000"], "--tile 30000x30000"),
    (["--scale", "native", "--overlap", "0.999"], "limit --max-tiles"), (["--max-tiles", "0"], "--max-tiles 0"),
    (["--ray", "127.0.0.1:1"], "no answer within"), (["--ray", "local", "--workers", "-1"], "--workers -1"),
])
def test_unbounded_values_are_one_usage_error_before_any_output(tmp_path, args, words):
    start = time.monotonic()
    res = cli("infer", str(SAMPLE), "-o", str(tmp_path / "out"), "-q", *args)
    assert res.exit_code == 2 and words in res.output, res.output
    assert not (tmp_path / "out").exists() and time.monotonic() - start < 30


def test_a_metadata_tile_beyond_the_limit_is_a_model_error(tmp_path):
    model = make_model(tmp_path / "m.onnx", metadata={"skinseg.format": "2", "skinseg.tile_height": "40000",
                                                      "skinseg.tile_width": "40000"})
    res = cli("infer", str(SAMPLE), "--model", str(model), "-o", str(tmp_path / "o"), "-q")
    assert res.exit_code == 2 and "skinseg.tile_height" in res.output and "4096" in res.output


# -- 5 and 6. one clear line, the right exit code -------------------------------------------------------------
@pytest.mark.parametrize(("env", "words"), [({"SKINSEG_MAX_PIXELS": "abc"}, "SKINSEG_MAX_PIXELS='abc'"),
                                            ({"SKINSEG_MAX_BYTES": "-1"}, "SKINSEG_MAX_BYTES='-1'")])
def test_a_bad_environment_limit_is_one_usage_error_naming_it(tmp_path, env, words):
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(SAMPLE), "-o", str(tmp_path / "o"), "-q"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_non_ascii_name_on_an_ascii_terminal_is_not_a_failure(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    shutil.copy(SAMPLE, images / "läsion-é.jpg")
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(images), "-o", str(tmp_path / "o")],
                         capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "200"},
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "masks" / "läsion-é.png").is_file()


def test_an_unsupported_opset_says_opset(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "op99.onnx"))
    res = cli("infer", str(SAMPLE), "--model", str(tmp_path / "op99.onnx"), "-q", "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "cannot load opset 99" in res.output and "std::" not in res.output


def test_eval_into_a_busy_folder_does_not_suggest_resume(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    res = cli("eval", "--images", str(TEST256), "-o", str(tmp_path / "busy"), "-q")
    assert res.exit_code == 2 and "--exist-ok" in res.output and "--resume" not in res.output


# -- 7. the quantize gate ----------------------------------------------------------------------------------
def test_quantize_refuses_zero_tiles_an_int8_model_and_nan_limits(tmp_path):
    from skinseg.inference.model_files import FP32, INT8

    calib = TEST256 / "images"
    for args, words in ((["--tiles", "0"], "--tiles 0"), (["--max-drop", "nan"], "--max-drop nan"),
                        (["--max-disagreement", "inf"], "--max-disagreement inf")):
        res = cli("quantize", str(FP32), "--calibration", str(calib), "-o", str(tmp_path / "q.onnx"), *args)
        assert res.exit_code == 2 and words in res.output, res.output
    res = cli("quantize", str(INT8), "--calibration", str(calib), "-o", str(tmp_path / "q.onnx"))
    assert res.exit_code == 2 and "already INT8" in res.output
    assert not list(tmp_path.iterdir())


def test_an_unreadable_calibration_image_is_left_out_of_the_gate_too(tmp_path):
    from skinseg.inference.model_files import FP32

    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted((TEST256 / "images").glob("*.jpg"))[:4]:
        shutil.copy(p, calib)
    (calib / "empty.jpg").write_bytes(b"")
    res = cli("quantize", str(FP32), "--calibration", str(calib), "--tiles", "4", "-o", str(tmp_path / "q.onnx"),
              "--force")
    assert res.exit_code == 0, res.output
    assert "empty.jpg" in res.output and (tmp_path / "q.onnx").is_file()


# -- 8. signals ----------------------------------------------------------------------------------------------
def test_sigterm_during_quantize_leaves_no_temporary_files(tmp_path):
    from skinseg.inference.model_files import FP32

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "quantize", str(FP32), "--calibration",
                             str(TEST256 / "images"), "-o", str(out / "q.onnx"), "--tiles", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob(".*")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("quantize finished before the signal landed")  # a fast machine: nothing to interrupt
    assert proc.returncode == 130 and "interrupted" in err
    assert not list(out.iterdir())


def _png_header_only(path: Path, w: int, h: int) -> None:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def test_one_bad_image_among_good_ones_costs_one_row(tmp_path):
    images = tmp_path / "i"
    images.mkdir()
    shutil.copy(SAMPLE, images)
    _png_header_only(images / "bomb.png", 40000, 40000)
    res = cli("infer", str(images), "-o", str(tmp_path / "o"), "-q")
    assert res.exit_code == 1
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and sum(",ok," in r for r in rows) == 1


def test_engine_options_reject_what_would_fail_later():
    from skinseg.inference.options import EngineOptions

    with pytest.raises(SkinsegError, match="--max-tiles"):
        EngineOptions(max_tiles=-5)


def test_a_damaged_png_is_an_error_row_without_libpng_noise(tmp_path):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = bytearray(buf.tobytes())
    data[60] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(tmp_path / "crc.png"), "-o",
                          str(tmp_path / "o"), "-q"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "libpng" not in res.stderr
    assert "damaged PNG (CRC error in its IDAT chunk)" in (tmp_path / "o" / "results.csv").read_text()


def test_the_probe_script_runs_its_cases():
    """scripts/probe.py: the hostile probe of every command (a handful of its cases here; all in README)."""
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "probe.py"), "--only", "infer --s"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:]
    assert " 0 defects" in res.stdout and "cases" in res.stdout
