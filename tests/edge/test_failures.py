"""Resource failures and broken models: clear one-line errors, no partial files."""

import errno
import os

import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared import files
from skinseg.shared.errors import SkinsegError
from tests.onnx_factory import make_model


def test_disk_full_gives_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "mask.png"
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    with pytest.raises(SkinsegError, match="disk full while writing"):
        files.write_bytes(target, b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_folder_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    model = make_model(tmp_path / "m.onnx")
    img = tmp_path / "a.png"
    import numpy as np

    from skinseg.shared.images import encode

    img.write_bytes(encode(".png", np.zeros((8, 8, 3), np.uint8)))
    res = CliRunner().invoke(app, ["infer", str(img), "--model", str(model), "-o", str(blocker / "out")])
    assert res.exit_code == 2 and "cannot write to output folder" in res.output


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_model_files(tmp_path, damage):
    model = make_model(tmp_path / "m.onnx", box=3)
    data = model.read_bytes()
    model.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(300), "empty": b""}[damage])
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    res = CliRunner().invoke(app, ["infer", str(img), "--model", str(model)])
    assert res.exit_code == 2 and str(model) in res.output and "Traceback" not in res.output


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    """ONNX external data may not point outside the model's folder (ONNX Runtime checks; we guard it)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from skinseg import Segmenter

    (tmp_path / "secret.bin").write_bytes(np.zeros(3, np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(3, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "12")):
        w.external_data.add(key=k, value=v)
    g = helper.make_graph([helper.make_node("Add", ["image", "w"], ["mask"])], "g",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
                          [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", "H", "W", 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "m.onnx"
    onnx.save(m, str(path))
    with pytest.raises(SkinsegError, match="not a loadable ONNX model.*escapes model directory"):
        Segmenter(path, "cpu")
