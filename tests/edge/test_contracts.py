"""One home per contract: the split rule, the working scale and resizes, model metadata, run folders.

The two mismatches these homes removed: eval, export and check-data did not find the seed layout's
masks beside `<split>/images`; and training resized images one way while the engine resized another,
with nothing in the model to say which.
"""

import json
import re
import shutil

import cv2
import numpy as np
import pytest

from skinseg.cli import app
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import scale as scaling
from skinseg.shared.dataset import locate_split, split_pairs
from skinseg.shared.errors import SkinsegError
from skinseg.shared.images import LoadedImage, encode
from skinseg.shared.metadata import FORMAT_VERSION, MetadataError, ModelMetadata
from tests.cli_helpers import ROOT, SAMPLE, invoke, runner
from tests.onnx_factory import make_model, stripes
from tests.realdata import ISIC256


def _seed_layout(tmp_path):
    """A dataset in the seed's layout, and a config naming `<split>/images` without mask_datapath."""
    root = tmp_path / "Skin-Cancer"
    shutil.copytree(ISIC256, root)
    cfg = tmp_path / "seed.ini"
    cfg.write_text('[train]\nimage_datapath = "Skin-Cancer/train/images"\n[eval]\n'
                   'image_datapath = "Skin-Cancer/valid/images"\n[test]\nimage_datapath = "Skin-Cancer/test/images"\n')
    return root, cfg


def test_split_rule_explicit_split_folder_beside_and_same(tmp_path):
    root, _ = _seed_layout(tmp_path)
    test = root / "test"
    assert locate_split(test) == locate_split(test / "images") == locate_split(test / "images", test / "masks")
    assert locate_split(test / "images").masks == test / "masks"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    assert locate_split(mixed).masks == mixed
    assert len(split_pairs(*vars(locate_split(test / "images")).values()).pairs) == 16


def test_check_data_and_eval_find_the_seed_layout_from_a_config(tmp_path):
    root, cfg = _seed_layout(tmp_path)
    res = runner.invoke(app, ["check-data", str(cfg), "-q"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "48 usable pairs, 0 problems" in res.output
    model = make_model(tmp_path / "m.onnx", tile=(64, 64), metadata={"skinseg.format": "2"})
    res = runner.invoke(app, ["eval", str(cfg), "--model", str(model), "-o", str(tmp_path / "ev"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["pairs"] == 16
    res = runner.invoke(app, ["eval", "--images", str(root / "test" / "images"), "--model", str(model),
                              "-o", str(tmp_path / "ev2"), "-q"])
    assert res.exit_code == 0, res.output


def test_engine_resizes_as_the_model_records(tmp_path):
    """The same image reaches the model resized with the model's own method: cubic here."""
    rgb = stripes(300, 400, seed=3)
    cubic = make_model(tmp_path / "c.onnx", metadata={"skinseg.format": "2", "skinseg.scale": "128",
                                                     "skinseg.resize": json.dumps({"image_down": "cubic"})})
    plain = make_model(tmp_path / "a.onnx", metadata={"skinseg.format": "1", "skinseg.scale": "128"})
    img = LoadedImage(rgb, 300, 400)
    got_cubic = Segmenter(cubic, "cpu").to_working(img)
    # the expected pixels from OpenCV itself (contract section 3: 300x400 at long side 128 is 96x128)
    np.testing.assert_array_equal(got_cubic, cv2.resize(rgb, (128, 96), interpolation=cv2.INTER_CUBIC))
    got_area = Segmenter(plain, "cpu").to_working(img)  # format 1: area
    np.testing.assert_array_equal(got_area, cv2.resize(rgb, (128, 96), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(got_cubic, got_area)
    assert Segmenter(plain, "cpu").resize == scaling.DEFAULT_RESIZE


def test_working_size_rounds_half_up():
    assert scaling.working_size(1200, 1600, 256) == (192, 256)
    assert scaling.working_size(3, 8, 4) == (2, 4)  # 1.5 -> 2
    assert scaling.working_size(5, 8, 4) == (3, 4)  # 2.5 -> 3 (Python round() gives 2)
    assert scaling.working_size(10, 10, None) == (10, 10)


def test_metadata_round_trips_and_refuses_bad_values():
    meta = ModelMetadata(tile=(192, 256), scale=256, threshold=0.45, resize={"image_down": "cubic"},
                         postprocess={"blur": 2.0}, provenance={"precision": "int8"}, tta=True,
                         review_threshold=0.6123)
    back = ModelMetadata.from_props(meta.to_props())
    assert back.format == FORMAT_VERSION == "4" and back.tta is True and back.tile == (192, 256)
    assert back.review_threshold == 0.6123
    assert ModelMetadata.from_props(ModelMetadata().to_props()).review_threshold is None  # absent: engine default
    assert back.scale == 256 and back.threshold == 0.45
    assert back.resize["image_down"] == "cubic" and back.postprocess["blur"] == 2.0
    assert back.input_dtype == "uint8" and back.provenance["precision"] == "int8"
    for key, value in [("scale", "-5"), ("scale", "abc"), ("threshold", "abc"), ("threshold", "1.5"),
                       ("tile_height", "0"), ("postprocess", "{bad"), ("postprocess", '{"keep": "some"}'),
                       ("resize", '{"image_down": "bicubic"}'), ("format", "9"), ("tta", "yes"),
                       ("review_threshold", "1.2"), ("review_threshold", "high"), ("review_threshold", "nan")]:
        props = meta.to_props() | {f"skinseg.{key}": value}
        with pytest.raises(MetadataError, match=f"skinseg.{key}"):
            ModelMetadata.from_props(props)


def test_invalid_metadata_is_a_model_error_not_a_silent_default(tmp_path):
    model = make_model(tmp_path / "m.onnx", metadata={"skinseg.format": "2", "skinseg.scale": "-5"})
    with pytest.raises(SkinsegError, match="skinseg.scale='-5' is invalid"):
        Segmenter(model, "cpu")
    img = tmp_path / "a.png"
    img.write_bytes(encode(".png", stripes(40, 40)))
    res = runner.invoke(app, ["infer", str(img), "--model", str(model), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "skinseg.scale" in res.output


def test_input_dtype_in_metadata_must_match_the_graph(tmp_path):
    model = make_model(tmp_path / "m.onnx", dtype="uint8", metadata={"skinseg.format": "2",
                                                                   "skinseg.input_dtype": "float32"})
    with pytest.raises(MetadataError, match="input_dtype float32"):
        Segmenter(model, "cpu")


def test_a_metadata_tile_beyond_the_limit_is_a_model_error(tmp_path):
    model = make_model(tmp_path / "m.onnx", metadata={"skinseg.format": "2", "skinseg.tile_height": "40000",
                                                      "skinseg.tile_width": "40000"})
    res = invoke("infer", str(SAMPLE), "--model", str(model), "-o", str(tmp_path / "o"), "-q")
    assert res.exit_code == 2 and "skinseg.tile_height" in res.output and "4096" in res.output


def test_an_unsupported_opset_says_opset(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "op99.onnx"))
    res = invoke("infer", str(SAMPLE), "--model", str(tmp_path / "op99.onnx"), "-q", "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "cannot load opset 99" in res.output and "std::" not in res.output


def _contract_table() -> dict[str, tuple[str, str]]:
    """docs/model-contract.md section 1, the reference clients read: {key: (example, default when absent)}."""
    text = (ROOT / "docs" / "model-contract.md").read_text()
    section = text[text.index("## 1. Reading the metadata"):text.index("\n## 2")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for key, example in zip(re.findall(r"`(\w+)`", cells[0]), re.findall(r"`([^`]+)`", cells[1]), strict=True):
                rows[key] = (example, cells[3].strip("`"))
    return rows


def test_metadata_written_and_defaults_used_are_what_the_contract_documents(tmp_path):
    """Held to the documentation clients are written from, not to the metadata module's own dicts."""
    table = _contract_table()
    assert {"format", "layout", "scale", "resize", "tiling", "postprocess", "tta", "review_threshold"} <= set(table)
    written = {k.removeprefix("skinseg."): v for k, v in ModelMetadata().to_props().items()}
    assert set(written) <= set(table)  # export writes no key the contract does not define
    for key in ("layout", "input_dtype", "input_range", "channel_order", "output", "threshold", "scale", "tta"):
        assert written[key] == table[key][1], key
    for key in ("resize", "tiling", "postprocess"):  # "as shown": the example is the default
        assert table[key][1] == "as shown" and json.loads(written[key]) == json.loads(table[key][0]), key
    bare = Segmenter(make_model(tmp_path / "m.onnx", dtype="uint8", metadata={"skinseg.format": "4"}), "cpu")
    used = bare.effective()  # a format-4 file saying nothing else runs with the documented defaults
    post = json.loads(table["postprocess"][0])
    assert (used["threshold"], used["tta"], used["review_threshold"]) == (
        float(table["threshold"][1]), table["tta"][1] == "true", float(table["review_threshold"][1]))
    assert {k: used[k] for k in post} == post and used["overlap"] == json.loads(table["tiling"][0])["overlap"]
    assert used["scale"] is None and table["scale"][1] == "native"


def test_the_working_scale_bounds_are_inclusive_and_a_refusal_says_what_to_give():
    assert scaling.check_scale(None) is None
    assert scaling.check_scale(32) == 32 and scaling.check_scale(16384) == 16384
    for bad in (31, 16385, 256.0, "256", True):
        with pytest.raises(SkinsegError, match=r"working scale .+: expected a long side between 32 and 16384 px, "
                                               r"or native$"):
            scaling.check_scale(bad)


def test_probability_back_to_full_size_as_opencv_resizes_it():
    """Height and width kept apart (a 30x50 map to 300x200), the model's method, and the caller's buffer."""
    prob = np.random.default_rng(0).random((30, 50)).astype(np.float32)
    want = cv2.resize(prob, (200, 300), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(scaling.probability_to_full(prob, (300, 200)), want)
    nearest = cv2.resize(prob, (200, 300), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(scaling.probability_to_full(prob, (300, 200), {"probability": "nearest"}), nearest)
    buf = np.zeros((300, 200), np.float32)
    assert scaling.probability_to_full(prob, (300, 200), out=buf) is buf and np.array_equal(buf, want)
    same = np.zeros((30, 50), np.float32)
    assert scaling.probability_to_full(prob, (30, 50), out=same) is same and np.array_equal(same, prob)
    assert scaling.probability_to_full(prob, (30, 50)) is prob  # already full size: no copy


def test_resize_methods_are_read_as_the_seed_spells_them():
    assert [scaling.method_from_config(n) for n in ("cv2.INTER_CUBIC", "INTER_AREA", " Linear ", "nearest")] == [
        "cubic", "area", "linear", "nearest"]
    with pytest.raises(SkinsegError, match=r"resize method 'bicubic': choose one of area, linear, cubic, nearest"):
        scaling.method_from_config("bicubic")


def test_a_sliver_keeps_one_pixel_and_each_direction_uses_its_own_method():
    assert scaling.working_size(1, 1000, 256) == (1, 256) and scaling.working_size(1000, 1, 256) == (256, 1)
    methods = {"image_down": "nearest", "image_up": "linear"}  # they give different pixels
    rgb = np.random.default_rng(1).integers(0, 256, (10, 100, 3), dtype=np.uint8)
    for size, name in (((30, 50), "image_up"),  # more pixels, though shorter: grows
                       ((100, 10), "image_up"),  # as many pixels, turned: not a shrink
                       ((5, 40), "image_down")):
        method = scaling.METHODS[methods[name]]
        want = cv2.resize(rgb, (size[1], size[0]), interpolation=method)
        assert np.array_equal(scaling.resize_image(rgb, size, methods), want), (size, name)


def test_a_training_mask_is_resized_linearly_with_height_and_width_apart():
    mask = np.zeros((30, 50), np.uint8)
    mask[5:20, 10:40] = 255
    assert np.array_equal(scaling.mask_to_size(mask, (300, 200)), cv2.resize(mask, (200, 300),
                                                                              interpolation=cv2.INTER_LINEAR))
    assert scaling.mask_to_size(mask, (30, 50)) is mask
