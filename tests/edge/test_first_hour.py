"""A newcomer's first hour: help that shows its words, the model a config trained, fresh output
folders, no silent fallbacks."""

import json

import numpy as np
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import encode
from tests.onnx_factory import make_model, stripes
from tests.realdata import ISIC256

runner = CliRunner()


def test_help_keeps_square_brackets_and_shows_flags_without_a_type():
    res = runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    assert "[infer] and [mask] sections" in res.output, res.output
    assert "[ray] extra" in res.output
    assert "<bool>" not in res.output
    for cmd in (["eval", "--help"], ["train", "--help"]):
        out = runner.invoke(app, cmd, env={"COLUMNS": "250"}).output
        assert "[test]" in out or "[train]" in out, out


def _fake_run(tmp_path, name="cfg", exported=True):
    """A config and the run folder `skinseg train` would have made for it (exported or not)."""
    cfg = tmp_path / f"{name}.ini"
    cfg.write_text(f'[train]\nruns_dir = "runs"\n[test]\nimage_datapath = "{ISIC256}/test/images"\n')
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "config.ini").write_text("[train]\n")
    (run / "state.json").write_text('{"epoch": 1}')
    (run / "best.keras").write_bytes(b"PK")
    if exported:
        make_model(run / "model-int8.onnx", tile=(64, 64), metadata={"skinseg.format": "2"})
    return cfg, run


def test_eval_with_a_config_scores_the_model_trained_from_it(tmp_path):
    cfg, run = _fake_run(tmp_path)
    res = runner.invoke(app, ["eval", str(cfg), "-o", str(tmp_path / "ev")], terminal_width=250)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["models"]["model-int8"]["path"] == str(run / "model-int8.onnx")
    assert f"model-int8 = {run / 'model-int8.onnx'}" in res.output  # the report names the file it scored


def test_a_config_without_an_exported_model_is_refused_with_the_export_command(tmp_path):
    cfg, run = _fake_run(tmp_path, exported=False)
    res = runner.invoke(app, ["eval", str(cfg)], terminal_width=250)
    assert res.exit_code == 2 and f"skinseg export {run}" in res.output
    img = tmp_path / "a.png"
    img.write_bytes(encode(".png", stripes(40, 40)))
    res = runner.invoke(app, ["infer", str(img), "--config", str(cfg)], terminal_width=250)
    assert res.exit_code == 2 and "skinseg export" in res.output
    cfg2 = tmp_path / "untrained.ini"
    cfg2.write_text('[train]\nruns_dir = "runs"\n')
    res = runner.invoke(app, ["infer", str(img), "--config", str(cfg2)], terminal_width=250)
    assert res.exit_code == 2 and "skinseg train" in res.output and "--model int8" in res.output


def test_model_may_be_a_run_folder_but_not_a_keras_checkpoint(tmp_path):
    _, run = _fake_run(tmp_path)
    img = tmp_path / "a.png"
    img.write_bytes(encode(".png", stripes(40, 40)))
    res = runner.invoke(app, ["infer", str(img), "--model", str(run), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "run.json").read_text())["engine"]["model"] == str(run / "model-int8.onnx")
    res = runner.invoke(app, ["infer", str(img), "--model", str(run / "best.keras")], terminal_width=250)
    assert res.exit_code == 2 and f"skinseg export {run}" in res.output and "protobuf" not in res.output


def test_runs_get_fresh_numbered_folders_and_a_full_output_needs_a_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_model(tmp_path / "m.onnx", tile=(64, 64))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(".png", stripes(40, 40)))
    for _ in range(2):
        assert runner.invoke(app, ["infer", "in", "--model", str(model), "-q"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "infer").iterdir()) == ["run", "run-2"]
    assert runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q"]).exit_code == 0
    res = runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q"], terminal_width=250)
    assert res.exit_code == 2 and "--resume" in res.output and "--exist-ok" in res.output
    assert runner.invoke(app, ["infer", "in", "--model", str(model), "-o", "out", "-q", "--exist-ok"]).exit_code == 0


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




def test_bench_times_the_working_scale_infer_uses(tmp_path):
    model = make_model(tmp_path / "m.onnx", tile=(64, 64), metadata={"skinseg.format": "2", "skinseg.scale": "128"})
    res = runner.invoke(app, ["bench", "--model", str(model), "--size", "640x480", "--repeat", "1"],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "working scale 128" in res.output and "128x96" in res.output
