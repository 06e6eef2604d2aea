"""The one image reader: orientation, colour order, odd formats, header checks, reduced decoding."""

import io
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from skinseg.cli import app
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import (
    binarize,
    choose_reduce,
    encode,
    load_image,
    probe_size,
    read_binary_mask,
    read_image,
    read_mask,
)
from tests.cli_helpers import SAMPLE, csv_rows, runner, small_png
from tests.onnx_factory import stripes


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


def _webp_vp8x(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + \
        (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _tiff(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def test_pixel_limit_holds_for_webp_and_tiff_from_their_headers(tmp_path, model):
    assert probe_size(_webp_vp8x(16383, 16383)) == (16383, 16383)
    assert probe_size(_tiff(15000, 15000)) == (15000, 15000)
    real = encode(".webp", stripes(30, 50))
    assert probe_size(real) == (50, 30)
    for name, data in (("bomb.webp", _webp_vp8x(16383, 16383)), ("bomb.tif", _tiff(15000, 15000))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match="above the 200 MP limit"):
            load_image(tmp_path / name)
    res = runner.invoke(app, ["infer", str(tmp_path / "bomb.webp"), str(tmp_path / "bomb.tif"), "--model", str(model),
                              "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    assert [r["status"] for r in csv_rows(tmp_path / "o" / "results.csv")] == ["error", "error"]


def test_opencv_pixel_guard_is_set_before_cv2_whatever_the_import_order():
    import subprocess
    import sys

    code = "import skinseg, cv2, os; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "200000000"


def test_fifo_and_oversized_files_are_error_rows_not_hangs(tmp_path, model, monkeypatch):
    os.mkfifo(tmp_path / "pipe.jpg")
    small_png(tmp_path / "big.png")
    monkeypatch.setenv("SKINSEG_MAX_BYTES", "100")
    res = runner.invoke(app, ["infer", str(tmp_path), "--model", str(model), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 1
    errors = {Path(r["file"]).name: r["error"] for r in csv_rows(tmp_path / "o" / "results.csv")}
    assert "not a regular file" in errors["pipe.jpg"] and "file limit" in errors["big.png"]


@pytest.mark.parametrize(("values", "dtype", "lesion", "note"), [
    ((0, 255), np.uint8, 255, None), ((0, 1), np.uint8, 1, "levels 0/1"), ((0, 1), np.uint16, 1, "16-bit"),
    ((0, 65535), np.uint16, 65535, "16-bit"), ((10, 200), np.uint8, 200, "levels 10/200"),
])
def test_two_level_masks_are_read_by_one_rule(tmp_path, values, dtype, lesion, note):
    m = np.full((20, 30), values[0], dtype)
    m[5:15, 10:20] = values[1]
    cv2.imwrite(str(tmp_path / "m.png"), m)
    got, said = read_binary_mask(tmp_path / "m.png")
    assert got.sum() == 100 and got[10, 15]
    assert (said is None) if note is None else (note in said)


def test_a_label_map_or_a_single_grey_value_is_an_error_not_an_empty_mask(tmp_path):
    labels = np.arange(200, dtype=np.uint8).reshape(10, 20) % 11  # values 0..10
    cv2.imwrite(str(tmp_path / "labels.png"), labels)
    with pytest.raises(InputError, match="label map"):
        read_binary_mask(tmp_path / "labels.png")
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((10, 10), 7, np.uint8))
    with pytest.raises(InputError, match="only the value 7"):
        read_binary_mask(tmp_path / "grey.png")


@pytest.mark.parametrize(("env", "words"), [({"SKINSEG_MAX_PIXELS": "abc"}, "SKINSEG_MAX_PIXELS='abc'"),
                                            ({"SKINSEG_MAX_BYTES": "-1"}, "SKINSEG_MAX_BYTES='-1'")])
def test_a_bad_environment_limit_is_one_usage_error_naming_it(tmp_path, env, words):
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(SAMPLE), "-o", str(tmp_path / "o"), "-q"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_damaged_png_is_an_error_row_without_libpng_noise(tmp_path):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = bytearray(buf.tobytes())
    data[60] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-m", "skinseg", "infer", str(tmp_path / "crc.png"), "-o",
                          str(tmp_path / "o"), "-q"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "libpng" not in res.stderr
    assert "damaged PNG (CRC error in its IDAT chunk)" in (tmp_path / "o" / "results.csv").read_text()


def test_every_format_of_the_nasty_corpus_decodes_to_the_pixels_pillow_reads(tmp_path):
    """Content, not shape: Pillow (an independent decoder, EXIF orientation applied) is the reference for
    16-bit, RGBA, palette, grey, CMYK, EXIF-rotated and WebP files; a channel swap, a wrong 16-bit
    scaling or a missed rotation changes pixels by far more than the tolerance."""
    from PIL import Image, ImageOps

    from tests.edge import nasty

    expected = nasty.build(tmp_path)
    checked = 0
    for name, outcome in expected.items():
        if outcome != "ok" or name.startswith("thin"):  # the 10x100000 strip: Pillow's own limits
            continue
        ours = read_image(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        assert ours.shape == ref.shape, name
        tolerance = 1 if name.startswith("cmyk") else 0  # CMYK->RGB rounds differently by one level
        assert np.abs(ours.astype(int) - ref).max() <= tolerance, name
        checked += 1
    assert checked >= 9


def _pillow(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _tiff_pages(end: str, pages: list[tuple[int, int, int]]) -> bytes:
    """A TIFF chain of IFDs written by hand: per page (width, height, field type 3 SHORT or 4 LONG)."""
    magic = b"II*\x00" if end == "<" else b"MM\x00*"
    out, offset = bytearray(magic + struct.pack(end + "I", 8)), 8
    for k, (w, h, typ) in enumerate(pages):
        entries = [(254, 4, 0), (256, typ, w), (257, typ, h)]
        ifd = struct.pack(end + "H", len(entries))
        for tag, t, value in entries:  # a SHORT sits in the first two bytes of the 4-byte value field
            field = struct.pack(end + "HH", value, 0) if t == 3 else struct.pack(end + "I", value)
            ifd += struct.pack(end + "HHI", tag, t, 1) + field
        nxt = offset + len(ifd) + 4 if k + 1 < len(pages) else 0
        out += ifd + struct.pack(end + "I", nxt)
        offset = len(out)
    return bytes(out)


@pytest.mark.parametrize("size", [(1, 1), (300, 17), (17, 300), (4099, 257), (2, 16383)])
def test_header_sizes_match_pillow_for_every_format_and_variant(size):
    """The bomb guard reads sizes from headers alone: each format and variant against Pillow's own header
    reader (JPEG baseline, progressive, behind an EXIF/ICC block and fill bytes; WebP lossy, lossless,
    extended; PNG; BMP bottom-up and top-down; TIFF)."""
    from PIL import Image

    w, h = size
    img = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    jpeg = _pillow(img, "JPEG", quality=80)
    variants = {
        "jpeg": jpeg,
        "jpeg progressive": _pillow(img, "JPEG", progressive=True),
        "jpeg exif+icc": _pillow(img, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 3000, icc_profile=b"\x00" * 5000),
        "jpeg fill bytes": jpeg[:2] + b"\xff" * 7 + jpeg[2:],
        "png": _pillow(img, "PNG"),
        "bmp": _pillow(img, "BMP"),
        "tiff": _pillow(img, "TIFF"),
    }
    if max(w, h) <= 16383:
        variants |= {"webp lossy": _pillow(img, "WEBP", quality=50),
                     "webp lossless": _pillow(img, "WEBP", lossless=True),
                     "webp extended": _pillow(img.convert("RGBA"), "WEBP", quality=50, exif=b"Exif\x00\x00MM")}
    for name, data in variants.items():
        with Image.open(io.BytesIO(data)) as back:
            assert back.size == size, name  # Pillow reads what was meant
        assert probe_size(data) == size, name
    top_down = bytearray(variants["bmp"])
    top_down[22:26] = struct.pack("<i", -h)  # negative height: rows stored top-down
    assert probe_size(bytes(top_down)) == size
    assert probe_size(_tiff_pages(">", [(w, h, 3)])) == size == probe_size(_tiff_pages("<", [(w, h, 4)]))
    assert probe_size(_tiff_pages(">", [(w, h, 4), (w + 1, h + 2, 3), (1, 1, 3)])) == (w + 1, h + 2)  # largest page


def test_deep_and_float_pixels_come_to_8_bits_by_one_rule(tmp_path):
    """16-bit: v / 257 rounded; float up to 1: times 255; other floats clipped to 0-255; NaN: 0. Worked out
    by hand, through the reader's public door (a mask file) and the ndarray rule it uses."""
    deep = np.array([[0, 128, 257, 32896, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert read_mask(tmp_path / "deep.png").tolist() == [[0, 0, 1, 128, 255]]
    from skinseg.shared.images import _to_uint8

    assert _to_uint8(np.array([0.0, 0.5, 1.0], np.float32)).tolist() == [0, 128, 255]
    assert _to_uint8(np.array([-5.0, 127.6, 300.0, np.nan], np.float32)).tolist() == [0, 128, 255, 0]
    assert _to_uint8(np.array([0.0, 1.0, 2.0], np.float64)).tolist() == [0, 1, 2]  # above 1: already 0-255
    assert _to_uint8(np.zeros((0,), np.float32)).shape == (0,)


def test_grey_level_masks_split_at_half_the_range_and_say_so(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[:, 3:] = 127
    m[:, 6:] = 128
    m[:, 8:] = 255
    cv2.imwrite(str(tmp_path / "aa.png"), m)
    got, said = read_binary_mask(tmp_path / "aa.png")
    assert got.sum() == 40 and said == "8-bit mask with 4 grey levels: lesion from 128 up"
    deep = (m.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "aa16.png"), deep)
    got, said = read_binary_mask(tmp_path / "aa16.png")
    assert got.sum() == 40 and said == "16-bit mask with 4 grey levels: lesion from 32768 up"
    for value, dtype, lesion, note in ((0, np.uint8, 0, None), (255, np.uint8, 100, None),
                                       (65535, np.uint16, 100, "16-bit mask")):
        cv2.imwrite(str(tmp_path / "one.png"), np.full((10, 10), value, dtype))
        got, said = read_binary_mask(tmp_path / "one.png")
        assert got.sum() == lesion and said == note, value
    cv2.imwrite(str(tmp_path / "labels.png"), np.tile(np.arange(5, dtype=np.uint8), (4, 1)))
    with pytest.raises(InputError, match=r"labels.png: mask values 0-4 \(5 levels, all below 128\): a label map"):
        read_binary_mask(tmp_path / "labels.png")
    assert binarize(np.array([127, 128, 255], np.uint8)).tolist() == [False, True, True]


def test_size_limits_hold_at_the_limit_and_name_the_figures(tmp_path, monkeypatch):
    from skinseg.shared.images import _check_pixels, read_bytes

    monkeypatch.setenv("SKINSEG_MAX_PIXELS", "300000000")
    _check_pixels((20000, 15000), "x.jpg")  # exactly at the limit: read
    with pytest.raises(InputError) as err:
        _check_pixels((20000, 15001), "x.jpg")
    assert str(err.value) == ("x.jpg: 20000x15001 is 300 MP, above the 300 MP limit; raise SKINSEG_MAX_PIXELS "
                              "if it is genuine")
    (tmp_path / "f.png").write_bytes(b"x" * 1000)
    monkeypatch.setenv("SKINSEG_MAX_BYTES", "1000")
    assert read_bytes(tmp_path / "f.png") == b"x" * 1000  # exactly at the limit: read
    monkeypatch.setenv("SKINSEG_MAX_BYTES", "999")
    with pytest.raises(InputError, match=r"f.png: 0.0 GB is above the 0.0 GB file limit; raise SKINSEG_MAX_BYTES"):
        read_bytes(tmp_path / "f.png")
    with pytest.raises(InputError, match=r": is a folder, not an image$"):
        read_bytes(tmp_path)
    with pytest.raises(InputError, match=r"nope.png: cannot read \(No such file or directory\)$"):
        read_bytes(tmp_path / "nope.png")
    monkeypatch.setenv("SKINSEG_MAX_BYTES", " 12 ")  # spaces around a number are fine
    from skinseg.shared.images import max_bytes

    assert max_bytes() == 12
    for bad in ("0", "1.5"):
        monkeypatch.setenv("SKINSEG_MAX_BYTES", bad)
        with pytest.raises(SkinsegError, match=rf"SKINSEG_MAX_BYTES='{re.escape(bad)}': expected a positive whole"):
            max_bytes()


def test_a_damaged_png_says_which_chunk():
    from skinseg.shared.images import png_problem

    good = encode(".png", np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    assert png_problem(good) is None and png_problem(b"\xff\xd8 a jpeg") is None
    iend = good.rindex(b"IEND") - 4
    assert png_problem(good[:iend]) == "cut short (no IEND chunk)"
    assert png_problem(good[: good.index(b"IDAT") + 20]) == "cut short inside its IDAT chunk"
    first = good[33 + 4 : 33 + 8]  # the chunk after IHDR
    bad = bytearray(good)
    bad[33 + 9] ^= 0xFF
    assert png_problem(bytes(bad)) == f"CRC error in its {first.decode('latin-1')} chunk"
    assert png_problem(good + b"trailing bytes after IEND") is None


def test_encoded_files_keep_what_was_asked(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    rough, fine = encode(".jpg", rgb, quality=10), encode(".jpeg", rgb, quality=95)
    assert len(rough) < len(fine) / 2  # the quality is passed for both spellings
    assert len(encode(".jpeg", rgb, quality=10)) == len(rough)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 5:50] = True
    png = encode(".png", mask)
    back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2 and set(np.unique(back)) == {0, 255}
    assert np.array_equal(back == 255, mask)
    assert np.array_equal(cv2.imdecode(np.frombuffer(encode(".png", rgb), np.uint8), cv2.IMREAD_COLOR)[..., ::-1], rgb)
