"""Fixtures the inference-side tests share (a test file's own fixture of the same name wins)."""

import pytest

from tests.onnx_factory import make_model


@pytest.fixture
def model(tmp_path):
    """A small uint8 model with 64 px tiles that works at native scale."""
    return make_model(tmp_path / "model.onnx", tile=(64, 64), dtype="uint8",
                      metadata={"skinseg.format": "2", "skinseg.scale": "native"})
