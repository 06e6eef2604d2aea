"""The one image reader: orientation, colour order, odd formats, header checks, reduced decoding."""

import struct

import cv2
import numpy as np
import pytest

from skinseg.shared.errors import InputError
from skinseg.shared.images import binarize, choose_reduce, encode, load_image, probe_size, read_image, read_mask


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only the Orientation tag right after SOI."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_colour_order_is_rgb(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 200  # red
    (tmp_path / "r.png").write_bytes(encode(".png", img))
    got = read_image(tmp_path / "r.png")
    assert got[0, 0].tolist() == [200, 0, 0]


def test_exif_rotation_applies_to_images_and_masks_alike(tmp_path):
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, :20] = 255  # bright band on the left
    jpeg = with_exif_orientation(encode(".jpg", img, 95), 6)  # 6 = rotate 90 CW to display
    (tmp_path / "rot.jpg").write_bytes(jpeg)
    got = read_image(tmp_path / "rot.jpg")
    assert got.shape == (100, 60, 3)
    assert got[:20].mean() > 200 and got[-20:].mean() < 50  # the band is now on top
    mask = (img[..., 0] > 0).astype(np.uint8) * 255
    (tmp_path / "rot_mask.jpg").write_bytes(with_exif_orientation(encode(".jpg", mask, 100), 6))
    m = binarize(read_mask(tmp_path / "rot_mask.jpg"))
    assert m.shape == got.shape[:2] and m[:20].mean() > 0.9
    loaded = load_image(tmp_path / "rot.jpg", target_long_side=25)  # reduced decode keeps orientation
    assert loaded.reduce == 4 and (loaded.height, loaded.width) == (100, 60)


@pytest.mark.parametrize("kind", ["gray", "rgba", "u16", "palette-like"])
def test_odd_formats_become_rgb_uint8(tmp_path, kind):
    base = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    if kind == "gray":
        arr = base[..., 0]
    elif kind == "rgba":
        arr = np.dstack([base[..., ::-1], np.full((20, 30), 128, np.uint8)])
    elif kind == "u16":
        arr = base[..., ::-1].astype(np.uint16) * 257
    else:
        arr = (base[..., 0] // 64 * 64).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    (tmp_path / "x.png").write_bytes(buf.tobytes())
    got = read_image(tmp_path / "x.png")
    assert got.shape == (20, 30, 3) and got.dtype == np.uint8
    if kind in ("rgba", "u16"):
        np.testing.assert_array_equal(got, base)


def test_header_probe_and_pixel_limit(tmp_path, monkeypatch):
    jpeg = encode(".jpg", np.zeros((30, 50, 3), np.uint8))
    assert probe_size(jpeg) == (50, 30)
    assert probe_size(encode(".png", np.zeros((7, 9), np.uint8))) == (9, 7)
    monkeypatch.setenv("SKINSEG_MAX_PIXELS", "1000")
    (tmp_path / "big.jpg").write_bytes(jpeg)
    with pytest.raises(InputError, match="above the 0 MP limit"):
        read_image(tmp_path / "big.jpg")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"hello", "not a readable image"), (b"\xff\xd8\xff\xe0garbage", "not a readable")],
)
def test_unreadable_files_raise_input_error(tmp_path, data, reason):
    (tmp_path / "bad.jpg").write_bytes(data)
    with pytest.raises(InputError, match=reason):
        read_image(tmp_path / "bad.jpg")


def test_choose_reduce():
    assert choose_reduce(6000, None) == 1
    assert choose_reduce(6000, 4000) == 1
    assert choose_reduce(6000, 3000) == 2
    assert choose_reduce(6000, 512) == 8


def test_non_ascii_and_spaces_in_names(tmp_path):
    p = tmp_path / "läsion größe 1.png"
    p.write_bytes(encode(".png", np.full((5, 5, 3), 9, np.uint8)))
    assert read_image(p).shape == (5, 5, 3)
