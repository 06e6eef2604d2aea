"""The reference Node.js client reproduces skinseg's masks from the model file alone (the contract).

scripts/test.sh installs Node.js (Debian) where missing and the client's npm packages; the rest of
the suite does not need Node.
"""

import shutil
import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.inference.review import DEFAULT_REVIEW_THRESHOLD
from skinseg.shared.images import binarize, read_mask
from skinseg.shared.metadata import ModelMetadata
from tests.cli_helpers import csv_rows
from tests.realdata import FULLRES_IMAGES, TEST_IMAGES

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js"


def check_mask_file(path: Path, size: tuple[int, int]) -> None:
    """The file itself, not a reader's conversion: 8-bit, one grey channel, 0/255, the image's size."""
    data = path.read_bytes()
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (depth, colour) == (8, 0), f"{path.name}: {depth} bit, colour {colour}"
    assert (height, width) == size
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}


def _jaccards(a: Path, b: Path, names: list[str]) -> list[float]:
    out = []
    for n in names:
        x, y = binarize(read_mask(a / f"{n}.png")), binarize(read_mask(b / n / "masks" / f"{n}.png"))
        union = (x | y).sum()
        out.append(float((x & y).sum() / union) if union else 1.0)
    return out


def with_tta(source: Path, out: Path) -> Path:
    """A copy of a shipped model whose metadata asks for flip TTA (weights unchanged)."""
    import onnx

    m = onnx.load(str(source))
    props = {p.key: p.value for p in m.metadata_props} | {"skinseg.tta": "true", "skinseg.format": "3"}
    del m.metadata_props[:]
    for key, value in props.items():
        m.metadata_props.add(key=key, value=value)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("precision", ["fp32", "int8", "int8-tta"])
def test_node_client_matches_skinseg_infer(tmp_path, precision):
    node = shutil.which("node")
    assert node and (CLIENT / "node_modules" / "onnxruntime-node").is_dir(), \
        "Node.js and the client's packages are needed: bash scripts/test.sh installs them"
    images = FULLRES_IMAGES + TEST_IMAGES[:6]
    model = Path(__file__).resolve().parents[2] / "skinseg" / "models" / f"skinseg-{precision.split('-')[0]}.onnx"
    if precision.endswith("tta"):
        model = with_tta(model, tmp_path / "tta.onnx")
    res = subprocess.run([node, str(CLIENT / "segment.js"), "--model", str(model), "--output", str(tmp_path / "js"),
                          *map(str, images)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    names = [p.stem for p in images]
    for p in images:
        check_mask_file(tmp_path / "js" / f"{p.stem}.png", cv2.imread(str(p)).shape[:2])
    for mode, extra in (("exact", ["--exact-decode"]), ("reduced", [])):
        for p in images:  # one folder per image: output names stay the image's stem
            r = CliRunner().invoke(app, ["infer", str(p), "--model", str(model), "-o", str(tmp_path / mode / p.stem),
                                         "-q", *extra])
            assert r.exit_code == 0, r.output
    exact = _jaccards(tmp_path / "js", tmp_path / "exact", names)
    reduced = _jaccards(tmp_path / "js", tmp_path / "reduced", names)
    print(f"{precision}: Jaccard min / mean {min(exact):.4f} / {np.mean(exact):.4f} (full decode), "
          f"{min(reduced):.4f} / {np.mean(reduced):.4f} (reduced JPEG decode)")
    if precision == "fp32":  # the contract's claim: the same masks as infer --exact-decode, pixel for pixel
        assert min(exact) == 1.0, exact
    else:  # INT8 kernels of another ONNX Runtime version round a few boundary pixels differently
        assert min(exact) >= 0.999, exact
    assert np.mean(reduced) >= 0.995  # infer's reduced JPEG decode differs at boundary pixels (the contract)
    # the review flag: the client's confidence is infer's (contract section 6), at the model's threshold
    said = dict(line.split(" -> ")[0:1] + [line.split(" confidence ")[1]] for line in res.stdout.splitlines())
    import onnx

    recorded = ModelMetadata.from_props({p.key: p.value for p in onnx.load(str(model)).metadata_props})
    threshold = DEFAULT_REVIEW_THRESHOLD if recorded.review_threshold is None else recorded.review_threshold
    for p in images:
        row = csv_rows(tmp_path / "exact" / p.stem / "results.csv")[0]
        js_conf, _, js_review = said[str(p)].split()
        assert abs(float(js_conf) - float(row["confidence"])) <= (1e-4 if precision == "fp32" else 0.01), p.name
        if abs(float(row["confidence"]) - threshold) > 0.01:
            assert js_review == row["review"], p.name
