"""The shipped files describe themselves at the current format; the TTA they ask for is followed; the
ORT-format conversion phones load keeps the metadata and the masks."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from skinseg import Segmenter
from skinseg.cli import app
from skinseg.inference import convert as conversion
from skinseg.inference.model_files import FP32, INT8
from skinseg.shared.metadata import FORMAT_VERSION, ModelMetadata

ROOT = Path(__file__).resolve().parents[2]
FULLRES = sorted((ROOT / "tests" / "data" / "isic" / "fullres" / "images").glob("*.jpg"))
runner = CliRunner()


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
    with_tta = Segmenter(INT8, "cpu").predict(FULLRES[0]).probability
    without = Segmenter(INT8, "cpu", tta=False).predict(FULLRES[0]).probability
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
    for image in FULLRES[:2]:
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
