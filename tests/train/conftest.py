"""A tiny model trained once on synthetic dermoscopy data, shared by the training and export tests."""

from pathlib import Path

import pytest

from skinseg.shared.synthetic import write_dataset

TINY = """
[model]
backbone = "mobilenetv2"
decoder = "separable"
alpha = 0.35
aspp_filters = 32
image_width = 64
image_height = 64
working_scale = 64
learning_rate = 0.003
dropout_rate = 0.0
[train]
name = "tiny"
runs_dir = "runs"
epochs = {epochs}
batch_size = 16
patience = 0
image_datapath = "data/train/images"
mask_datapath = "data/train/masks"
[eval]
image_datapath = "data/valid/images"
mask_datapath = "data/valid/masks"
[test]
image_datapath = "data/valid/images"
mask_datapath = "data/valid/masks"
[mask]
threshold = 0.45
[augmentor]
transformer = False
shrinks = []
shears = []
"""


def tiny_project(root: Path, epochs: int = 6) -> Path:
    if not (root / "data").exists():
        write_dataset(root / "data" / "train", 240, (64, 64), seed=1)
        write_dataset(root / "data" / "valid", 48, (64, 64), seed=2)
    cfg = root / "tiny.ini"
    cfg.write_text(TINY.format(epochs=epochs))
    return cfg


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """Train the tiny model (6 epochs, about a minute on 2 CPU cores); returns the run folder."""
    from skinseg.training.trainer import train

    root = tmp_path_factory.mktemp("tiny")
    return train(tiny_project(root), quiet=True)
