"""Every command survives the nasty corpus: each bad file reported with a reason, the rest processed."""

import csv
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.images import read_image, read_mask
from tests.edge import nasty
from tests.onnx_factory import make_model


def test_infer_over_nasty_corpus(tmp_path, monkeypatch):
    nasty.permissions_as_for_a_user(monkeypatch)
    expected = nasty.build(tmp_path / "in")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")  # a symlink loop in the input folder
    model = make_model(tmp_path / "m.onnx", tile=(32, 32), metadata={"skinseg.scale": "native"})
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["infer", str(tmp_path / "in"), "-r", "--model", str(model), "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    with open(out / "results.csv", newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert set(rows) == set(expected)
    for name, want in expected.items():
        assert rows[name]["status"] == want, (name, rows[name])
        if want == "error":
            assert rows[name]["error"], name
            continue
        mask = read_mask(out / "masks" / f"{Path(name).stem}.png") > 0
        lesion = nasty.lesion_mask(name)  # worked out by hand from what was written, not by the reader
        assert mask.shape == lesion.shape, name
        assert np.mean(mask == lesion) >= 0.99, (name, np.mean(mask == lesion))  # a channel swap empties it
    assert "above the 200 MP limit" in rows["bomb-header.png"]["error"]
    assert int(rows["exif-rotated.jpg"]["width"]) == 60 and int(rows["exif-rotated.jpg"]["height"]) == 80
    assert all(p.resolve().parent == (out / "masks").resolve() for p in (out / "masks").iterdir())


def test_eval_and_check_data_over_nasty_corpus(tmp_path, monkeypatch):
    nasty.permissions_as_for_a_user(monkeypatch)
    expected = nasty.build(tmp_path / "images")
    masks = tmp_path / "masks"
    masks.mkdir()
    from skinseg.shared.images import encode

    for name, want in expected.items():
        if want == "ok":
            h, w = read_image(tmp_path / "images" / name).shape[:2]
            m = nasty.lesion_rgb(h, w)[..., 0] < 128
            (masks / f"{Path(name).stem}_segmentation.png").write_bytes(encode(".png", m))
        else:
            (masks / f"{Path(name).stem}_segmentation.png").write_bytes(encode(".png", nasty.lesion_rgb(5, 5)[..., 0]))
    model = make_model(tmp_path / "m.onnx", tile=(32, 32), metadata={"skinseg.scale": "native"})
    res = CliRunner().invoke(app, ["eval", "--images", str(tmp_path / "images"), "--masks", str(masks),
                                   "--model", str(model), "-o", str(tmp_path / "ev"), "-q", "--keep", "all"])
    assert res.exit_code == 1, res.output
    with open(tmp_path / "ev" / "metrics.csv", newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    for name, want in expected.items():
        assert rows[name]["status"] == want, (name, rows[name])
    res = CliRunner().invoke(app, ["check-data", str(tmp_path), "-q"], terminal_width=300)
    assert res.exit_code == 1
    for name, want in expected.items():
        if want == "error":
            assert name in res.output, name
