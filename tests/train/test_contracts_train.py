"""Training and serving agree: the same resize, recorded in the model; the same split rule."""

import json
import shutil

import numpy as np

from skinseg.inference.segmenter import Segmenter
from skinseg.shared.config import load_config
from skinseg.shared.images import load_image
from skinseg.training.data import load_pair
from skinseg.training.export import Exporter, Source, validation_pairs
from tests.onnx_factory import make_model
from tests.realdata import FULLRES, FULLRES_IMAGES, ISIC256


def test_training_pixels_are_the_pixels_the_engine_feeds(tmp_path):
    """With the seed's cv2.INTER_CUBIC, training and the exported model's engine resize identically."""
    cfg_path = tmp_path / "c.ini"
    cfg_path.write_text('[model]\nworking_scale = 256\n[dataset]\nresize_interpolation = "cv2.INTER_CUBIC"\n')
    cfg = load_config(cfg_path)
    assert cfg.resize["image_down"] == "cubic"
    image = FULLRES_IMAGES[0]
    mask = FULLRES / "masks" / f"{image.stem}_segmentation.png"
    rgb, m = load_pair(image, mask, cfg.model.working_scale, cfg.resize)
    model = make_model(tmp_path / "m.onnx", metadata={"skinseg.format": "2", "skinseg.scale": "256",
                                                     "skinseg.resize": json.dumps(cfg.resize)})
    seg = Segmenter(model, "cpu")
    np.testing.assert_array_equal(rgb, seg.to_working(load_image(image, seg.scale)))
    assert m.shape == rgb.shape[:2] and set(np.unique(m)) <= {0, 1}


def test_export_records_the_training_resize_and_finds_seed_layout_validation(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copytree(ISIC256, tmp_path / "data")
    text = (run / "config.ini").read_text()
    text = text.replace('resize_interpolation = "cv2.INTER_AREA"', 'resize_interpolation = "cv2.INTER_CUBIC"')
    lines = [ln for ln in text.splitlines() if not ln.startswith(("image_datapath", "mask_datapath"))]
    text = "\n".join(lines).replace("[eval]", f'[eval]\nimage_datapath = "{tmp_path}/data/valid/images"')
    (run / "config.ini").write_text(text + "\n")
    exporter = Exporter(run)
    assert exporter.meta.resize["image_down"] == "cubic"
    assert exporter.meta.to_props()["skinseg.resize"] == json.dumps(exporter.meta.resize)
    assert len(validation_pairs(exporter.src, None)) == 8
    assert len(validation_pairs(Source(run / "best.keras", None), tmp_path / "data" / "valid")) == 8
