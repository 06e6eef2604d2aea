"""Fixtures the inference-side tests share (a test file's own fixture of the same name wins)."""

import pytest

from skinseg.shared.images import encode
from tests.onnx_factory import make_model, stripes


@pytest.fixture
def model(tmp_path):
    """A small uint8 model with 64 px tiles that works at native scale."""
    return make_model(tmp_path / "model.onnx", tile=(64, 64), dtype="uint8",
                      metadata={"skinseg.format": "2", "skinseg.scale": "native"})


@pytest.fixture
def images(tmp_path):
    """Three stripe images of odd sizes in tmp_path/in."""
    d = tmp_path / "in"
    d.mkdir()
    for i, (h, w) in enumerate([(120, 160), (77, 301), (200, 50)]):
        (d / f"img{i}.png").write_bytes(encode(".png", stripes(h, w, seed=i)))
    return d
