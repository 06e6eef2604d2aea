"""Pairing by stem and `skinseg check-data`."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from skinseg.cli import app
from skinseg.shared.dataset import collect_images, pair_images_masks
from skinseg.shared.images import encode
from skinseg.shared.synthetic import write_dataset
from tests.realdata import ISIC256


def test_pairing_rules_case_insensitive():
    images = [Path("a/ISIC_1.jpg"), Path("a/ISIC_2.JPG"), Path("a/isic_3.png"), Path("a/lonely.jpg")]
    masks = [Path("m/ISIC_1_segmentation.png"), Path("m/isic_2_Segmentation.png"), Path("m/ISIC_3.png"),
             Path("m/orphan_segmentation.png")]
    p = pair_images_masks(images, masks)
    assert {(i.name, m.name) for i, m in p.pairs} == {("ISIC_1.jpg", "ISIC_1_segmentation.png"),
                                                     ("ISIC_2.JPG", "isic_2_Segmentation.png"),
                                                     ("isic_3.png", "ISIC_3.png")}
    assert [i.name for i in p.images_without_mask] == ["lonely.jpg"]
    assert [m.name for m in p.masks_without_image] == ["orphan_segmentation.png"]


def test_collect_images_files_folders_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.tif"):
        (tmp_path / name).write_bytes(b"x")
    found, problems = collect_images([tmp_path, str(tmp_path / "*.jpg"), tmp_path / "missing.jpg"])
    assert sorted(p.name for p in found) == ["a.jpg", "b.PNG"] and len(problems) == 1
    found, _ = collect_images([tmp_path], recursive=True)
    assert sorted(p.name for p in found) == ["a.jpg", "b.PNG", "c.tif"]


def test_symlink_loop_does_not_hang(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(encode(".png", np.zeros((4, 4), np.uint8)))
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    found, _ = collect_images([tmp_path / "d"], recursive=True)
    assert [p.name for p in found] == ["x.png"]


def test_check_data_names_every_problem(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root / "train", 4, (32, 48), seed=1)
    write_dataset(root / "valid", 2, (32, 48), seed=2)
    img, msk = root / "train" / "images", root / "train" / "masks"
    (img / "nomask.jpg").write_bytes(encode(".jpg", np.zeros((32, 48, 3), np.uint8)))
    (msk / "noimage_segmentation.png").write_bytes(encode(".png", np.zeros((32, 48), np.uint8)))
    (img / "broken.jpg").write_bytes(b"garbage")
    (msk / "broken_segmentation.png").write_bytes(encode(".png", np.zeros((32, 48), np.uint8)))
    (img / "small.jpg").write_bytes(encode(".jpg", np.zeros((32, 48, 3), np.uint8)))
    (msk / "small_segmentation.png").write_bytes(encode(".png", np.zeros((10, 10), np.uint8)))
    (img / "grey.jpg").write_bytes(encode(".jpg", np.zeros((32, 48, 3), np.uint8)))
    (msk / "grey_segmentation.png").write_bytes(encode(".png", np.full((32, 48), 77, np.uint8)))
    (img / "blank.jpg").write_bytes(encode(".jpg", np.zeros((32, 48, 3), np.uint8)))
    (msk / "blank_segmentation.png").write_bytes(encode(".png", np.zeros((32, 48), np.uint8)))
    # the same id in train and valid
    first = sorted(img.glob("SYN_*.jpg"))[0]
    (root / "valid" / "images" / first.name).write_bytes(first.read_bytes())
    (root / "valid" / "masks" / f"{first.stem}_segmentation.png").write_bytes(
        (msk / f"{first.stem}_segmentation.png").read_bytes())
    res = CliRunner().invoke(app, ["check-data", str(root), "-q"], terminal_width=250)
    assert res.exit_code == 1, res.output
    out = res.output
    for needle in ("nomask.jpg: no mask found", "noimage_segmentation.png", "broken.jpg",
                   "small_segmentation.png is 10x10 but image is 48x32", "only the value 77: not a binary mask",
                   "empty mask",
                   f"duplicate id {first.stem.lower()} in train, valid"):
        assert needle in out, needle


def test_check_data_real_dataset_is_clean():
    res = CliRunner().invoke(app, ["check-data", str(ISIC256), "-q"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "48 usable pairs, 0 problems" in res.output
