
from pathlib import Path

import numpy as np
import pytest

from skinseg import Segmenter
from skinseg.cli import app
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import encode
from tests.cli_helpers import runner, small_png
from tests.onnx_factory import expected_probability, make_model, stripes

NO_POST = {"keep": "all", "fill_holes": False}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("output", ["probability", "logits", "softmax"])
def test_known_model_gives_exact_mask(tmp_path, layout, dtype, output):
    model = make_model(tmp_path / "m.onnx", layout=layout, dtype=dtype, output=output)
    seg = Segmenter(model, "cpu", tile=64, scale=None, **NO_POST)
    img = stripes(150, 230)
    pred = seg.predict(img)
    assert pred.mask.shape == (150, 230) and pred.probability.shape == (150, 230)
    np.testing.assert_array_equal(pred.mask, expected_probability(img) >= 0.5)
    if output == "probability":
        np.testing.assert_allclose(pred.probability, expected_probability(img), atol=1e-5)


@pytest.mark.parametrize("batch", [None, 1, 3])
def test_fixed_tile_and_fixed_batch(tmp_path, batch):
    model = make_model(tmp_path / "m.onnx", tile=(48, 64), batch=batch, output_rank=3)
    seg = Segmenter(model, "cpu", scale=None, batch=4, **NO_POST)
    assert seg.tile == (48, 64)
    img = stripes(101, 333)
    np.testing.assert_array_equal(seg.predict(img).mask, expected_probability(img) >= 0.5)


def test_image_smaller_than_tile_is_padded_and_cropped(tmp_path):
    seg = Segmenter(make_model(tmp_path / "m.onnx", tile=(64, 64)), "cpu", scale=None, **NO_POST)
    for shape in [(1, 1), (10, 100), (63, 2)]:
        img = stripes(*shape)
        pred = seg.predict(img)
        np.testing.assert_array_equal(pred.mask, expected_probability(img) >= 0.5)


def test_tiled_agrees_with_whole_image_prediction(tmp_path):
    """A model with spatial context (7x7 box filter): tiles blend into the whole-image answer."""
    model = make_model(tmp_path / "box.onnx", box=7)
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    whole = Segmenter(model, "cpu", tile=(300, 420), scale=None, **NO_POST).predict(img).probability
    tiled = Segmenter(model, "cpu", tile=96, overlap=0.5, scale=None, **NO_POST).predict(img).probability
    diff = np.abs(whole - tiled)
    assert diff.mean() < 2e-4 and diff.max() < 0.02
    # without Gaussian-weighted overlap the seams are visibly worse
    seams = Segmenter(model, "cpu", tile=96, overlap=0.0, scale=None, **NO_POST).predict(img).probability
    assert np.abs(whole - seams).max() > diff.max()


def test_tta_on_flip_invariant_model_changes_nothing(tmp_path):
    model = make_model(tmp_path / "m.onnx", box=3)
    img = stripes(120, 90)
    a = Segmenter(model, "cpu", tile=64, scale=None).predict(img).probability
    b = Segmenter(model, "cpu", tile=64, scale=None, tta=True).predict(img).probability
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_io_binding_matches_plain_run(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    img = stripes(100, 100)
    a = Segmenter(model, "cpu", tile=64, scale=None, io_binding=False).predict(img).probability
    b = Segmenter(model, "cpu", tile=64, scale=None, io_binding=True).predict(img).probability
    np.testing.assert_array_equal(a, b)


def test_working_scale_output_at_input_resolution_and_reduced_decode(tmp_path):
    model = make_model(tmp_path / "m.onnx", tile=(64, 64),
                       metadata={"skinseg.format": "1", "skinseg.scale": "256", "skinseg.threshold": "0.4"})
    seg = Segmenter(model, "cpu")
    assert seg.scale == 256 and seg.post.threshold == 0.4
    img = np.zeros((1200, 1600, 3), np.uint8)
    img[..., 0] = 230
    img[300:900, 400:1200, 0] = 20  # a big lesion block
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(".jpg", img, 95))
    loaded = seg.load(path)
    assert loaded.reduce == 4 and (loaded.height, loaded.width) == (1200, 1600)
    pred = seg.predict(path)
    assert pred.mask.shape == (1200, 1600) and pred.working_size == (192, 256)
    truth = img[..., 0] < 128
    iou = (pred.mask & truth).sum() / (pred.mask | truth).sum()
    assert iou > 0.98
    native = Segmenter(model, "cpu", scale=None)
    assert native.load(path).reduce == 1


def test_metadata_and_flags(tmp_path):
    model = make_model(tmp_path / "m.onnx", metadata={"skinseg.format": "1", "skinseg.tile_height": "32",
                                                        "skinseg.tile_width": "48", "skinseg.input_range": "0,255"})
    seg = Segmenter(model, "cpu")
    assert seg.tile == (32, 48) and seg.spec.input_max == 255.0 and seg.spec.self_describing
    assert Segmenter(model, "cpu", tile=(40, 56)).tile == (40, 56)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tile": 32}, "fixed at 48x64"), ({"scale": 3}, "--scale 3"), ({"scale": 10**8}, "--scale"),
     ({"overlap": 1.0}, "overlap 1.0"), ({"batch": -1}, "batch -1"), ({"provider": "warp"}, "unknown --provider")],
)
def test_bad_options_are_user_errors(tmp_path, kwargs, message):
    model = make_model(tmp_path / "m.onnx", tile=(48, 64))
    kwargs = {"provider": "cpu"} | kwargs
    with pytest.raises(SkinsegError, match=message):
        Segmenter(model, **kwargs)


def test_requested_provider_that_is_not_active_is_an_error(tmp_path, monkeypatch):
    """ONNX Runtime silently falls back to the CPU; the engine must refuse instead."""
    import onnxruntime as ort

    from skinseg.inference import session

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(session, "nvidia_driver", lambda: None)
    with pytest.raises(SkinsegError, match="CUDAExecutionProvider is not active.*no NVIDIA driver.*cannot help"):
        Segmenter(make_model(tmp_path / "m.onnx"), "cuda")
    monkeypatch.setattr(session, "nvidia_driver", lambda: "NVRM version: 580")
    with pytest.raises(SkinsegError, match="CUDAExecutionProvider is not active.*no GPU support"):
        Segmenter(make_model(tmp_path / "m.onnx"), "cuda")


def test_auto_provider_reports_what_is_active(tmp_path):
    seg = Segmenter(make_model(tmp_path / "m.onnx"), "auto")
    assert seg.providers[-1] == "CPUExecutionProvider"


def test_model_errors_name_the_file_and_shapes(tmp_path):
    with pytest.raises(SkinsegError, match="model file not found"):
        Segmenter(tmp_path / "missing.onnx", "cpu")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(SkinsegError, match="not a loadable ONNX model"):
        Segmenter(bad, "cpu")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "flat.onnx"))
    with pytest.raises(SkinsegError, match=r"shape \[1, 10\]"):
        Segmenter(tmp_path / "flat.onnx", "cpu")


def test_array_input_must_be_rgb_uint8(tmp_path):
    seg = Segmenter(make_model(tmp_path / "m.onnx"), "cpu", tile=32)
    with pytest.raises(SkinsegError, match="RGB uint8"):
        seg.predict(np.zeros((10, 10, 4), np.uint8))
    assert seg.predict(np.zeros((10, 10), np.uint8)).mask.shape == (10, 10)


def _mean_then(path: Path, op: str, const) -> Path:
    """A model: the channel mean of the image, then `op` with one constant ('nan' or 'shape')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = "shape" if op == "Reshape" else "nan"
    g = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["m"], axes=[3], keepdims=1),
                           helper.make_node(op, ["m", name], ["mask"])], op,
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
                          [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "H", "W", 1])],
                          [numpy_helper.from_array(const, name)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_non_finite_model_output_is_a_model_error(tmp_path):
    small_png(tmp_path / "a.png")
    nan_model = _mean_then(tmp_path / "n.onnx", "Mul", np.array(np.nan, np.float32))
    res = runner.invoke(app, ["infer", str(tmp_path / "a.png"), "--model", str(nan_model),
                              "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
    assert res.exit_code == 2 and "NaN or infinite" in res.output


def test_a_model_that_fails_on_every_tile_is_one_model_error(tmp_path):
    """A Reshape that only fits 64x64 inputs, run with 32 px tiles: one line, exit 2, not a row per image."""
    _mean_then(tmp_path / "bad.onnx", "Reshape", np.array([-1, 64, 64, 1], np.int64))
    for i in range(3):
        small_png(tmp_path / f"a{i}.png", i)
    res = runner.invoke(app, ["infer", str(tmp_path), "--model", str(tmp_path / "bad.onnx"), "--tile", "32",
                              "-o", str(tmp_path / "o"), "-q"], terminal_width=250)
    assert res.exit_code == 2 and "the model failed on a [" in res.output, res.output
    assert res.output.count("error:") == 1


def test_engine_options_reject_what_would_fail_later():
    from skinseg.inference.options import EngineOptions

    with pytest.raises(SkinsegError, match="--max-tiles"):
        EngineOptions(max_tiles=-5)
