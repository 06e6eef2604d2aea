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
from skinseg.shared.synthetic import png_header
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
    with pytest.raises(InputError, match=r"50x30 is 0\.0015 MP, above the 0\.001 MP limit"):
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
    with pytest.raises(InputError, match=r"f.png: 1000 bytes is above the 999 bytes file limit; raise SKINSEG_MAX"):
        read_bytes(tmp_path / "f.png")
    monkeypatch.setenv("SKINSEG_MAX_PIXELS", "3400000")
    with pytest.raises(InputError, match=r"^x.jpg: 2000x1750 is 3\.5 MP, above the 3\.4 MP limit;"):
        _check_pixels((2000, 1750), "x.jpg")  # below 10 MP two figures: not "4 MP above the 3 MP limit"
    for size, limit, said in ((2_500_000, 1_000_000, "2.5 MB is above the 1.0 MB"),
                              (1_460_000_000, 1_340_000_000, "1.5 GB is above the 1.3 GB")):
        with open(tmp_path / "sparse.tif", "wb") as f:
            f.truncate(size)  # a sparse file: the size without the disk
        monkeypatch.setenv("SKINSEG_MAX_BYTES", str(limit))
        with pytest.raises(InputError, match=re.escape(said)):
            read_bytes(tmp_path / "sparse.tif")
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


def test_encoded_files_keep_what_was_asked(tmp_path, capfd):
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
    assert capfd.readouterr().err == ""  # 8 bits handed to OpenCV: no "fallbacked to CV_8U" line on the terminal
    assert np.array_equal(cv2.imdecode(np.frombuffer(encode(".png", rgb), np.uint8), cv2.IMREAD_COLOR)[..., ::-1], rgb)


# The JPEG header walk. Each case puts a comment segment holding a frame header for 16x16 (a decoy)
# right after the construct under test: a walk that loses its step by one byte lands inside the comment
# and reports 16x16 instead of the image's size (ITU T.81 B.1.1: which markers carry a length).
def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


_FAKE = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10"  # a frame header for 16x16, 9 bytes
_DECOY = _segment(0xFE, _FAKE * 2 + b" frame headers inside a comment")  # at odd and even offsets


@pytest.mark.parametrize(("before", "what"), [
    (b"", "the decoy alone"),
    (b"\x00", "one stray byte between segments (libjpeg reads past it)"),
    (b"\x00\x00", "two stray bytes"),
    (b"\x00\x00\x00", "three stray bytes"),
    (b"\xff", "one fill byte"),
    (b"\xff\xff", "two fill bytes"),
    (b"\xff\xff\xff", "three fill bytes"),
    (b"\xff\x01", "TEM, a marker without a length"),
    (b"\xff\xd0", "RST0, a marker without a length"),
    (b"\xff\xd7", "RST7, a marker without a length"),
    (b"\xff\xd8", "a repeated SOI, without a length"),
    (_segment(0xE2, b"ICC_PROFILE\x00" + _FAKE * 4500), "an APP segment above 32 KB, holding FF C0 bytes"),
    (_segment(0xC4, b"\x00\x11\x08\x00\x10\x00\x10"), "DHT, whose code C4 lies among the frame headers'"),
    (_segment(0xC8, b"\x00\x11\x08\x00\x10\x00\x10"), "JPG (C8), reserved, not a frame header"),
    (_segment(0xCC, b"\x00\x11\x08\x00\x10\x00\x10"), "DAC (CC), not a frame header"),
    (_segment(0xE1, b"Exif\x00\x00" + encode(".jpg", np.zeros((8, 16, 3), np.uint8))), "an EXIF thumbnail JPEG"),
])
def test_the_jpeg_header_walk_steps_over_each_kind_of_segment(before, what):
    jpeg = encode(".jpg", np.zeros((48, 64, 3), np.uint8))
    assert probe_size(jpeg[:2] + before + _DECOY + jpeg[2:]) == (64, 48), what


@pytest.mark.parametrize("marker", [m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)])
def test_every_frame_header_kind_gives_the_size(marker):
    """Baseline, extended, progressive, lossless, hierarchical and arithmetic-coded frames (SOF0-SOF15)."""
    jpeg = bytearray(encode(".jpg", np.zeros((48, 64, 3), np.uint8)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 1] = marker
    assert probe_size(bytes(jpeg)) == (64, 48)


def test_jpeg_sizes_above_32767_and_headers_cut_short():
    jpeg = bytearray(encode(".jpg", np.zeros((48, 64, 3), np.uint8)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 40000, 65535)  # height, width: 16 bits unsigned each
    assert probe_size(bytes(jpeg)) == (65535, 40000)
    assert probe_size(bytes(jpeg[: sof + 9])) == (65535, 40000)  # cut right after the width: still read
    assert probe_size(bytes(jpeg[: sof + 8])) is None  # cut inside it
    assert probe_size(bytes(jpeg[:sof])) is None  # no frame header before the end: no size, no error
    assert probe_size(b"\xff\xd8" + b"\x00" * 40) is None


def test_png_sizes_up_to_32_bits():
    forged = png_header(2**31 + 5, 1)  # read unsigned, so the guard sees it
    assert probe_size(forged) == (2**31 + 5, 1)
    with pytest.raises(InputError, match=r"2147483653x1 is 2147 MP, above the 200 MP limit"):
        load_image(forged, name="forged.png")


def _ifd(end: str, entries: list[tuple[int, int, int]], nxt: int) -> bytes:
    out = struct.pack(end + "H", len(entries))
    for tag, typ, value in entries:
        field = struct.pack(end + "HH", value, 0) if typ == 3 else struct.pack(end + "I", value)
        out += struct.pack(end + "HHI", tag, typ, 1) + field
    return out + struct.pack(end + "I", nxt)


@pytest.mark.parametrize("end", ["<", ">"])
def test_tiff_headers_read_by_their_field_types_and_broken_chains(end):
    magic = b"II*\x00" if end == "<" else b"MM\x00*"

    def tiff(entries, nxt=0):
        return magic + struct.pack(end + "I", 8) + _ifd(end, entries, nxt)

    assert probe_size(tiff([(256, 4, 70000), (257, 4, 3)])) == (70000, 3)  # LONG above 16 bits
    assert probe_size(tiff([(256, 3, 40000), (257, 3, 3)])) == (40000, 3)  # SHORT above 15 bits
    assert probe_size(tiff([(256, 4, 3_000_000_000), (257, 3, 1)])) == (3_000_000_000, 1)  # LONG above 31 bits
    assert probe_size(tiff([(257, 3, 100)])) is None  # a page without its width: no size, no error
    big = tiff([(256, 4, 30000), (257, 4, 30000)])
    for nxt in (len(big) - 2, len(big) - 1, len(big), len(big) + 100):  # the chain points at or past the end
        assert probe_size(big[:-4] + struct.pack(end + "I", nxt)) == (30000, 30000), nxt
    filler = [(60000 + k % 1000, 3, 0) for k in range(32767)]
    wide = tiff([(256, 4, 30000), (257, 4, 30000)] + filler)  # 32769 entries: the count is 16 bits unsigned
    assert probe_size(wide) == (30000, 30000)


def _dicom_bytes(rgb: np.ndarray, *, preamble: bool = True, spacing: float | None = 0.05, **fields) -> bytes:
    from tests.dicom_factory import photo

    ds = photo(rgb, "1.2.826.0.1.3680043.8.498.1", spacing=spacing)
    for key, value in fields.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    if not preamble:
        ds.preamble = None
    ds.save_as(buf, enforce_file_format=preamble)
    return buf.getvalue()


def test_image_kind_from_the_first_bytes():
    from PIL import Image

    from skinseg.shared.images import image_kind

    img = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    for fmt, kind in (("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")):
        assert image_kind(_pillow(img, fmt)) == kind, fmt
    assert image_kind(b"MM\x00*" + b"\x00" * 8) == "tiff"  # big-endian TIFF
    dcm = _dicom_bytes(np.zeros((4, 6, 3), np.uint8))
    assert image_kind(dcm) == "dicom"
    for other in (b"", b"\xff", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"GIF89a" + b"\x00" * 10, b"P6\n4 4\n255\n",
                  b"\x00" * 129 + b"DICM", b"\x00" * 128 + b"dicm", b"II*\x01", b"BA",
                  b"RIFX" + _webp_vp8x(16383, 16383)[4:]):  # WEBP and a size, but not in a RIFF file
        assert image_kind(other) is None, other
        assert probe_size(other) is None, other


def test_dicom_through_the_one_reader(tmp_path, monkeypatch):
    """A DICOM photo, by its preamble or, without one, by its .dcm name: the pixels, the full size, no
    reduced decode, the header and the millimetre scale; its size guard from the header alone."""
    rgb = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    dcm = _dicom_bytes(rgb)
    assert probe_size(dcm) == (50, 30)
    assert probe_size(dcm[:200]) is None  # a damaged header: no size here, the reader says why
    (tmp_path / "photo.dcm").write_bytes(_dicom_bytes(rgb, preamble=False))
    (tmp_path / "photo.bin").write_bytes(dcm)
    for source in (dcm, tmp_path / "photo.dcm", tmp_path / "photo.bin"):
        loaded = load_image(source, target_long_side=10)
        assert np.array_equal(loaded.rgb, rgb) and (loaded.height, loaded.width, loaded.reduce) == (30, 50, 1)
        assert loaded.dicom.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" and loaded.pixel_spacing == 0.05
        assert "PixelData" not in loaded.dicom  # the header travels, not a second copy of the pixels
    (tmp_path / "nameless.bin").write_bytes(_dicom_bytes(rgb, preamble=False))
    with pytest.raises(InputError, match=r"nameless.bin: not a readable image"):
        load_image(tmp_path / "nameless.bin")  # neither preamble nor name says DICOM
    monkeypatch.setenv("SKINSEG_MAX_PIXELS", "1499")
    with pytest.raises(InputError, match=r"^up.dcm: 50x30 is 0\.0015 MP, above the 0\.0015 MP limit"):
        load_image(dcm, name="up.dcm")


def test_bytes_and_paths_are_named_in_every_message(tmp_path):
    png = encode(".png", np.full((3, 4, 3), 7, np.uint8))
    loaded = load_image(bytearray(png))
    assert loaded.rgb.shape == (3, 4, 3) and loaded.reduce == 1
    with pytest.raises(InputError, match=r"^<upload>: empty file \(0 bytes\)$"):
        load_image(b"")
    with pytest.raises(InputError, match=r"^<upload>: not a readable image \(corrupt, truncated or unsupported"):
        load_image(b"not an image")
    with pytest.raises(InputError, match=r"^shot.jpg: not a readable image"):
        load_image(b"not an image", name="shot.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / 'bad.jpg'))}: not a readable image"):
        load_image(tmp_path / "bad.jpg")
    bad_png = bytearray(png)
    bad_png[bad_png.index(b"IDAT") + 6] ^= 0xFF
    with pytest.raises(InputError, match=r"^c.png: damaged PNG \(CRC error in its IDAT chunk\)$"):
        load_image(bytes(bad_png), name="c.png")
    with pytest.raises(InputError, match=r"^r.jpg: 3000x2000 is 6 MP, above the 5 MP limit"):
        jpeg = bytearray(encode(".jpg", np.zeros((20, 30, 3), np.uint8)))
        sof = jpeg.index(b"\xff\xc0")
        jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 2000, 3000)
        os.environ["SKINSEG_MAX_PIXELS"] = "5000000"
        try:
            load_image(bytes(jpeg), target_long_side=100, name="r.jpg")  # the reduced path is guarded too
        finally:
            del os.environ["SKINSEG_MAX_PIXELS"]
    one = load_image(encode(".png", np.full((1, 1, 3), 200, np.uint8)))
    assert one.rgb.tolist() == [[[200, 200, 200]]]


def test_reduced_decodes_round_odd_sizes_up():
    """libjpeg's 1/4 decode of 1001x750 is ceil(1001/4) x ceil(750/4) = 251 x 188: still the reduced path."""
    img = np.random.default_rng(1).integers(0, 256, (750, 1001, 3), dtype=np.uint8)
    loaded = load_image(encode(".jpg", img), target_long_side=250)
    assert (loaded.reduce, loaded.rgb.shape, loaded.height, loaded.width) == (4, (188, 251, 3), 750, 1001)
    full = load_image(encode(".jpg", img))
    assert (full.reduce, full.rgb.shape) == (1, (750, 1001, 3))


def test_a_turned_near_square_jpeg_keeps_its_full_size_when_the_reduced_decode_cannot_tell():
    """1000 wide x 999 high, EXIF turn 90: 1000 high x 999 wide. At 1/8 both ways are 125 x 125, so the
    reduced decode cannot say which way round the full image is: it was taken as 999 x 1000 (the mask came
    out transposed against the image); now the image is decoded in full."""
    img = np.random.default_rng(3).integers(0, 256, (999, 1000, 3), dtype=np.uint8)
    turned = with_exif_orientation(encode(".jpg", img), 6)
    loaded = load_image(turned, target_long_side=125)
    assert (loaded.height, loaded.width) == (1000, 999) == loaded.rgb.shape[:2]
    wide = load_image(with_exif_orientation(encode(".jpg", img[:, :992]), 6), target_long_side=124)
    assert (wide.reduce, wide.height, wide.width, wide.rgb.shape) == (8, 992, 999, (124, 125, 3))


def test_opencv_guard_follows_our_limit_for_formats_we_do_not_probe(tmp_path):
    """A genuine image above 200 MP is read once SKINSEG_MAX_PIXELS is raised: OpenCV's own guard (set at
    import) follows it, and keeps its default for a bad value (which the commands report as a usage error);
    where OpenCV's guard speaks (a PNM header we do not read), the message is ours."""
    ppm = tmp_path / "p.jpg"
    ppm.write_bytes(b"P6\n1300 1200\n255\n" + b"\x00" * 64)  # 1.56 MP claimed by a PNM header
    code = ("import os, sys; from skinseg.shared.images import load_image\n"
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])\n"
            "try: load_image(sys.argv[1])\n"
            "except Exception as e: print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}  # as a fresh shell has it
    for limit, guard in (("1500000", "1500000"), ("abc", "200000000")):
        res = subprocess.run([sys.executable, "-c", code, str(ppm)], capture_output=True, text=True, timeout=60,
                             env={**env, "SKINSEG_MAX_PIXELS": limit})
        lines = res.stdout.strip().splitlines()
        assert lines[0] == guard, res.stderr
    res = subprocess.run([sys.executable, "-c", code, str(ppm)], capture_output=True, text=True, timeout=60,
                         env={**env, "SKINSEG_MAX_PIXELS": "1500000"})
    assert res.stdout.strip().splitlines()[1] == (f"{ppm}: cannot decode this image (above the 1.5 MP limit; raise "
                                                  "SKINSEG_MAX_PIXELS if it is genuine)")


def test_opencv_guard_refusals_read_as_ours_in_process(tmp_path):
    """This process's OpenCV guard is the default 200 MP: a PNM header (which skinseg does not probe)
    claiming 300 MP is refused by OpenCV, and the line says so in skinseg's words, for images and masks."""
    bomb = b"P6\n20000 15000\n255\n" + b"\x00" * 64
    with pytest.raises(InputError) as err:
        load_image(bomb, name="b.jpg")
    assert str(err.value) == ("b.jpg: cannot decode this image (above the 200 MP limit; raise SKINSEG_MAX_PIXELS "
                              "if it is genuine)")
    (tmp_path / "m.png").write_bytes(b"P5\n20000 15000\n255\n" + b"\x00" * 64)
    with pytest.raises(InputError, match=r"m.png: cannot decode this mask \(above the 200 MP limit; raise SKINSEG"):
        read_binary_mask(tmp_path / "m.png")
    (tmp_path / "dot.png").write_bytes(encode(".png", np.ones((1, 1), bool)))
    assert read_binary_mask(tmp_path / "dot.png")[0].tolist() == [[True]]  # a one-pixel mask is a mask


def test_masks_name_the_file_in_every_message(tmp_path, monkeypatch):
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / 'junk.png'))}: not a readable mask \(corrupt,"):
        read_binary_mask(tmp_path / "junk.png")
    png = bytearray(encode(".png", np.zeros((5, 5), bool)))
    png[png.index(b"IDAT") + 6] ^= 0xFF  # inside the compressed data: the chunk's CRC no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(png))
    with pytest.raises(InputError, match=r"crc.png: damaged PNG mask \(CRC error in its IDAT chunk\)$"):
        read_binary_mask(tmp_path / "crc.png")
    (tmp_path / "bomb.png").write_bytes(png_header(30000, 30000))
    with pytest.raises(InputError, match=r"bomb.png: 30000x30000 is 900 MP, above the 200 MP limit"):
        read_binary_mask(tmp_path / "bomb.png")
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((4, 4), 7, np.uint8))
    with pytest.raises(InputError) as err:
        read_binary_mask(tmp_path / "grey.png")
    assert str(err.value) == (f"{tmp_path / 'grey.png'}: the mask holds only the value 7: not a binary mask "
                              "(expected 0 and 255, or two levels)")


def test_anti_aliased_and_float_masks(tmp_path):
    """A soft edge with few grey levels splits at 128 even when only its top level reaches it; a mask
    whose top level is exactly 128 is a mask, not a label map; a float TIFF mask of 0/1 is read as 0/255."""
    m = np.zeros((10, 10), np.uint8)
    m[:, 4:] = 64
    m[:, 6:] = 255
    cv2.imwrite(str(tmp_path / "soft.png"), m)
    got, said = read_binary_mask(tmp_path / "soft.png")
    assert got.sum() == 40 and said == "8-bit mask with 3 grey levels: lesion from 128 up"
    m[:, 6:] = 128
    cv2.imwrite(str(tmp_path / "half.png"), m)
    got, _ = read_binary_mask(tmp_path / "half.png")
    assert got.sum() == 40
    f = np.zeros((10, 10), np.float32)
    f[2:5, 2:7] = 1.0
    cv2.imwrite(str(tmp_path / "f.tif"), f)
    got, said = read_binary_mask(tmp_path / "f.tif")
    assert np.array_equal(got, f == 1.0) and said is None


def test_limits_from_the_environment_take_blank_as_unset_and_one_as_one(monkeypatch):
    from skinseg.shared.images import DEFAULT_MAX_BYTES, _to_uint8, max_bytes, max_pixels

    monkeypatch.setenv("SKINSEG_MAX_BYTES", "  ")
    assert max_bytes() == DEFAULT_MAX_BYTES
    monkeypatch.setenv("SKINSEG_MAX_PIXELS", "1")
    assert max_pixels() == 1
    out = _to_uint8(np.array([0.7, 0.25], np.float32))  # 178.5 rounds to even; times 256 would give 179
    assert out.dtype == np.uint8 and out.tolist() == [178, 64]


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    from skinseg.shared.images import read_bytes
    from tests.edge import nasty

    nasty.permissions_as_for_a_user(monkeypatch)  # CI runs as root, who reads files whatever their mode
    (tmp_path / "locked.png").write_bytes(b"x")
    (tmp_path / "locked.png").chmod(0)
    with pytest.raises(InputError) as err:
        read_bytes(tmp_path / "locked.png")
    assert str(err.value) == f"{tmp_path / 'locked.png'}: permission denied; make it readable"
