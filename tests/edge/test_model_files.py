"""The shipped files describe themselves at the current format; the TTA they ask for is followed; the
ORT-format conversion phones load keeps the metadata and the masks."""

import json
import shutil

import numpy as np
import onnx
import pytest

from skinseg import Segmenter
from skinseg.cli import app
from skinseg.inference import convert as conversion
from skinseg.inference.model_files import FP32, INT8
from skinseg.shared.images import encode
from skinseg.shared.metadata import FORMAT_VERSION, ModelMetadata
from tests.cli_helpers import ROOT, fake_run, runner
from tests.onnx_factory import stripes
from tests.realdata import FULLRES_IMAGES


@pytest.mark.parametrize("path", [FP32, INT8], ids=["fp32", "int8"])
def test_shipped_files_are_at_the_current_format_and_pass_the_checker(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["skinseg.format"] == FORMAT_VERSION
    assert {"skinseg.resize", "skinseg.tiling", "skinseg.tta"} <= set(props)
    meta = ModelMetadata.from_props(props, str(path))
    assert meta.tta is True  # +0.84 points of validation mean Jaccard (MODEL_CARD.md)
    assert json.loads(props["skinseg.metrics"])["tta"]["gain_points"] >= 0.3
    used = {n.domain for n in model.graph.node} | {""}
    assert {o.domain for o in model.opset_import} == used  # no domain imported and never used


def test_the_engine_follows_the_model_unless_told():
    assert Segmenter(INT8, "cpu").tta is True
    assert Segmenter(INT8, "cpu", tta=False).tta is False
    assert "--no-tta" in runner.invoke(app, ["infer", "--help"], env={"COLUMNS": "200"}).output
    with_tta = Segmenter(INT8, "cpu").predict(FULLRES_IMAGES[0]).probability
    without = Segmenter(INT8, "cpu", tta=False).predict(FULLRES_IMAGES[0]).probability
    assert not np.array_equal(with_tta, without)


def test_eval_reports_with_and_without_tta(tmp_path):
    data = ROOT / "tests" / "data" / "isic" / "isic256" / "test"
    res = runner.invoke(app, ["eval", "--images", str(data), "--model", "int8", "-o", str(tmp_path / "ev"), "-q",
                              "--worst", "0"])
    assert res.exit_code == 0, res.output
    tta = json.loads((tmp_path / "ev" / "summary.json").read_text())["models"]["skinseg-int8"]["tta"]
    assert tta["used"] is True and tta["mean_jaccard_with"] != tta["mean_jaccard_without"]
    assert all(0 < tta[k] <= 1 for k in ("mean_jaccard_with", "mean_jaccard_without", "thresholded_jaccard_with"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort")
    for name, source in (("fp32", FP32), ("int8", INT8)):
        res = runner.invoke(app, ["convert", str(source), "--to", "ort", "-o", str(out / f"{name}.ort")],
                            env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "CoreML MLProgram" in res.output and "NNAPI" in res.output and "metadata kept" in res.output
    return out


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_ort_format_files_load_with_fixed_shapes_metadata_and_the_same_masks(converted, name):
    import onnxruntime as ort

    path = converted / f"{name}.ort"
    config = converted / f"{name}.required_operators.config"
    assert config.is_file() and "Conv" in config.read_text()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 192, 256, 3]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["skinseg.format"] == FORMAT_VERSION and meta["skinseg.tta"] == "true"
    source = FP32 if name == "fp32" else INT8
    for image in FULLRES_IMAGES[:2]:
        a, b = Segmenter(source, "cpu").predict(image), Segmenter(path, "cpu").predict(image)
        agreement = (a.mask & b.mask).sum() / max(1, (a.mask | b.mask).sum())
        assert agreement > (0.9999 if name == "fp32" else 0.99)


def test_convert_refuses_a_failed_parity_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(conversion, "parity", lambda *a: (0.5, 0.4))
    res = runner.invoke(app, ["convert", str(FP32), "--to", "ort", "-o", str(tmp_path / "m.ort")])
    assert res.exit_code == 2 and "differs from its source" in res.output
    assert not list(tmp_path.iterdir())
    res = runner.invoke(app, ["convert", str(FP32), "--to", "tflite"])
    assert res.exit_code == 2 and "--to 'tflite'" in res.output


def test_eval_with_a_config_scores_the_model_trained_from_it(tmp_path):
    cfg, run = fake_run(tmp_path)
    res = runner.invoke(app, ["eval", str(cfg), "-o", str(tmp_path / "ev")], terminal_width=250)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["models"]["model-int8"]["path"] == str(run / "model-int8.onnx")
    assert f"model-int8 = {run / 'model-int8.onnx'}" in res.output  # the report names the file it scored


def test_a_config_without_an_exported_model_is_refused_with_the_export_command(tmp_path):
    cfg, run = fake_run(tmp_path, exported=False)
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
    _, run = fake_run(tmp_path)
    img = tmp_path / "a.png"
    img.write_bytes(encode(".png", stripes(40, 40)))
    res = runner.invoke(app, ["infer", str(img), "--model", str(run), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "run.json").read_text())["engine"]["model"] == str(run / "model-int8.onnx")
    res = runner.invoke(app, ["infer", str(img), "--model", str(run / "best.keras")], terminal_width=250)
    assert res.exit_code == 2 and f"skinseg export {run}" in res.output and "protobuf" not in res.output


def test_a_run_folders_default_on_the_cpu_is_the_faster_accepted_precision(tmp_path, monkeypatch):
    from skinseg.inference import adapter, model_files
    from skinseg.runner import models
    from skinseg.shared.runfolder import RunFolder

    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    rf = RunFolder(run)
    shutil.copy(model_files.FP32, rf.model)
    shutil.copy(model_files.INT8, rf.variant("int8"))
    times = {rf.model.name: 1.0, rf.variant("int8").name: 2.0}  # INT8 slower here (a tiny model, no VNNI)
    monkeypatch.setattr(adapter.ModelAdapter, "latency_ms", lambda self, runs=20: times[self.model_path.name])
    assert models.faster_on_cpu(rf) == rf.model
    times[rf.variant("int8").name] = 0.5
    assert models.faster_on_cpu(rf) == rf.variant("int8")
    rf.variant("int8").unlink()  # only FP32 exported (or INT8 refused by the gate)
    assert models.faster_on_cpu(rf) == rf.model


def test_convert_takes_a_shipped_name_and_writes_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["convert", "int8", "--to", "ort"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert (tmp_path / "skinseg-int8.ort").is_file()
    assert not (FP32.parent / "skinseg-int8.ort").exists()  # never into the installed package
    # each phone accelerator's verdict in words: a NO still runs, on the phone's CPU; no "1 partitions"
    assert "the phone's CPU runs the model" in res.output and "1 partitions" not in res.output
