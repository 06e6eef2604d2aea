"""Helpers for tests that stop a real `skinseg infer` process part-way (kill -9, Ctrl-C, a Ray worker)."""

from __future__ import annotations

import time
from pathlib import Path

from skinseg.shared.images import encode
from tests.onnx_factory import make_model, stripes


def slow_job(tmp_path: Path, n: int) -> tuple[Path, Path, Path]:
    """A model with a 9x9 box filter on 128 px tiles and `n` 700x900 images: slow enough to interrupt.
    Returns (model, input folder, output folder)."""
    model = make_model(tmp_path / "m.onnx", box=9, tile=(128, 128))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        (src / f"img{i:02d}.png").write_bytes(encode(".png", stripes(700, 900, seed=i)))
    return model, src, tmp_path / "out"


def wait_for_masks(out: Path, count: int, timeout: float = 120) -> int:
    """Wait until `count` masks exist (or the timeout); returns how many there are."""
    deadline = time.time() + timeout
    while time.time() < deadline and len(list((out / "masks").glob("*.png"))) < count:
        time.sleep(0.05)
    return len(list((out / "masks").glob("*.png")))


def assert_masks_as_uninterrupted(model: Path, src: Path, out: Path, **options) -> None:
    """Every mask in `out` equals what one uninterrupted engine in this process makes of its image with
    the same options: content, not only shape, after a kill, a resume or a replaced worker."""
    import numpy as np

    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared.images import binarize, read_mask

    seg = Segmenter(model, "cpu", **options)
    images = sorted(src.glob("*.png"))
    assert images
    for p in images:
        got = binarize(read_mask(out / "masks" / p.name))
        assert np.array_equal(got, seg.predict(p).mask), p.name
