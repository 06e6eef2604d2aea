"""The one image reader: every command reads pixels through here.

Rules, applied everywhere (training, export calibration, infer, eval, check-data):
- Orientation: EXIF orientation is applied, to images and to masks alike (as OpenCV, browsers and
  the ISIC viewers do), so a rotated JPEG and its PNG mask stay aligned.
- Colour: images come back RGB, uint8, HxWx3 (grey, RGBA, palette, CMYK, 16-bit are converted).
- Masks come back single-channel; `binarize` turns them into bool at 128 (the ISIC convention).
- Size: images above `max_pixels()` are refused from their header, before any allocation.
- DICOM: single-frame colour objects are read through shared/dicom.py (the `[dicom]` extra); their
  header (for a DICOM SEG answer) and their millimetre scale travel with the pixels.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import DEFAULT_MAX_PIXELS  # noqa: E402 - set before any cv2 import (skinseg/__init__.py)

DEFAULT_MAX_BYTES = 1_000_000_000  # a 200 MP image compresses far below this; a 3 GB ".png" is junk

import cv2  # noqa: E402

from skinseg.shared.errors import InputError, SkinsegError, file_size, megapixels  # noqa: E402
from skinseg.shared.files import shown  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _limit(name: str, default: int) -> int:
    """A size limit from the environment; a value that is not a positive whole number is a usage error
    naming the variable (it would otherwise fail every image)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise SkinsegError(f"{name}={raw!r}: expected a positive whole number (default {default}); fix or unset it")
    return value


def max_pixels() -> int:
    return _limit("SKINSEG_MAX_PIXELS", DEFAULT_MAX_PIXELS)


@dataclass
class LoadedImage:
    """Decoded RGB pixels plus the size of the full-resolution, oriented image."""

    rgb: np.ndarray  # HxWx3 uint8, possibly decoded at 1/reduce of full size
    height: int  # full-resolution height after orientation
    width: int
    reduce: int = 1
    dicom: Any = None  # a DICOM source's header (pydicom Dataset without pixels), else None
    pixel_spacing: float | None = None  # millimetres per pixel where the file states it (DICOM)


def max_bytes() -> int:
    return _limit("SKINSEG_MAX_BYTES", DEFAULT_MAX_BYTES)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, after checking it is a regular file (a FIFO would block forever) of sane size."""
    path = Path(path)
    name = shown(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{name}: not a regular file (a pipe, socket or device); only files are read")
        if st.st_size > max_bytes():
            raise InputError(f"{name}: {file_size(st.st_size)} is above the {file_size(max_bytes())} file "
                             "limit; raise SKINSEG_MAX_BYTES if it is genuine")
        data = path.read_bytes()
    except PermissionError as exc:
        raise InputError(f"{name}: permission denied; make it readable") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a folder, not an image") from exc
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    return data


def probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, WebP, TIFF or BMP without decoding, or None.

    Written here because OpenCV has no header-only reader; it lets us refuse decompression bombs of
    every format we read before allocating anything, and pick a reduced JPEG decode.
    """
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(int(w)), abs(int(h))
        if data[128:132] == b"DICM":
            return _dicom_size(data)
    except struct.error:
        return None
    return None


def _dicom_size(data: bytes) -> tuple[int, int] | None:
    """(Columns, Rows) from a DICOM header, stopping before the pixel data; None without pydicom."""
    try:
        import io

        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                             specific_tags=["Rows", "Columns"])
        return int(ds.Columns), int(ds.Rows)
    except Exception:  # noqa: BLE001 - no pydicom, or a damaged header: the reader says why later
        return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 9 <= n:  # room for a marker, its length and a frame header's height and width
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:  # no length: SOI, TEM, RSTn, a fill byte
            i += 1  # onto the code byte: a fill byte's is the next marker's 0xFF, any other is stepped over as stray
            continue
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + seg_len
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 packed after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """The largest page in a TIFF's chain of IFDs (ImageWidth 256, ImageLength 257)."""
    end = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(end + "I", data[4:8])[0]
    best: tuple[int, int] | None = None
    for _ in range(64):  # pages; a loop in the chain cannot trap us
        if offset < 8:  # 0 ends the chain; below 8 would point into the file header
            break
        try:
            count = struct.unpack(end + "H", data[offset : offset + 2])[0]
            size: dict[int, int] = {}
            for k in range(count):
                e = offset + 2 + 12 * k
                tag, typ = struct.unpack(end + "HH", data[e : e + 4])
                if tag in (256, 257):
                    fmt = "H" if typ == 3 else "I"
                    size[tag] = struct.unpack(end + fmt, data[e + 8 : e + 8 + struct.calcsize(fmt)])[0]
            if 256 in size and 257 in size and (best is None or size[256] * size[257] > best[0] * best[1]):
                best = (size[256], size[257])
            offset = struct.unpack(end + "I", data[offset + 2 + 12 * count : offset + 6 + 12 * count])[0]
        except struct.error:  # the chain runs past the end: the pages read so far still count
            break
    return best


def _check_pixels(size: tuple[int, int] | None, name: str) -> None:
    if size is not None and size[0] * size[1] > max_pixels():
        raise InputError(
            f"{name}: {size[0]}x{size[1]} is {megapixels(size[0] * size[1])} MP, above the "
            f"{megapixels(max_pixels())} MP limit; raise SKINSEG_MAX_PIXELS if it is genuine"
        )


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:  # round(v / 257) in one pass: no 4-byte copy of a 16-bit image
        return cv2.convertScaleAbs(img, alpha=1 / 257)
    img = img.astype(np.float32)
    if img.size and float(np.nanmax(img)) <= 1.0:
        img = img * 255.0
    return np.clip(np.nan_to_num(img), 0, 255).round().astype(np.uint8)


def png_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure is damaged (bad CRC, cut short, no IEND), or None. Checked here because
    libpng prints its own `libpng error:` line to the terminal for these, around skinseg's messages."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return f"cut short inside its {kind.decode('latin-1')} chunk"
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != int.from_bytes(data[end - 4 : end], "big"):
            return f"CRC error in its {kind.decode('latin-1')} chunk"
        if kind == b"IEND":
            return None
        pos = end
    return "cut short (no IEND chunk)"


def _imdecode(data: bytes | bytearray, flags: int, name: str, what: str) -> np.ndarray:
    """OpenCV's decoder, its failures as one line naming the file; `what` is "image" or "mask"."""
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        said = str(exc).strip().splitlines()[-1]
        if "CV_IO_MAX_IMAGE_PIXELS" in said:  # OpenCV's own guard, for a format whose header we do not read
            said = f"above the {megapixels(max_pixels())} MP limit; raise SKINSEG_MAX_PIXELS if it is genuine"
        raise InputError(f"{name}: cannot decode this {what} ({said})") from exc
    if img is None or img.size == 0:
        raise InputError(f"{name}: not a readable {what} (corrupt, truncated or unsupported format)")
    return img


def decode_image(data: bytes | bytearray, name: str, reduce: int = 1) -> np.ndarray:
    """Decode bytes to RGB uint8 HxWx3, oriented by EXIF; `reduce` in {1,2,4,8} (JPEG DCT scaling)."""
    _check_pixels(probe_size(data), name)
    if (why := png_problem(data)) is not None:
        raise InputError(f"{name}: damaged PNG ({why})")
    flags = _REDUCED_FLAGS[reduce] if reduce > 1 else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    img = _to_uint8(_imdecode(data, flags, name, "image"))  # IMREAD_COLOR gives three channels, grey expanded
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second full-size copy


def choose_reduce(long_side: int, target_long_side: int | None) -> int:
    """Largest JPEG reduction 2/4/8 that still decodes at least `target_long_side` pixels."""
    if not target_long_side:
        return 1
    factor = 1
    for f in (2, 4, 8):
        if long_side / f >= target_long_side:
            factor = f
    return factor


def load_image(source: str | os.PathLike[str] | bytes | bytearray, target_long_side: int | None = None,
               name: str | None = None) -> LoadedImage:
    """Read an image (a path, or bytes already in memory named `name` in messages) for a model working
    at `target_long_side` px (None = full resolution).

    When the working scale is half the native size or less, JPEGs are decoded at 1/2, 1/4 or 1/8
    size directly instead of decoding e.g. 30 MP and shrinking.
    """
    if isinstance(source, bytes | bytearray):
        data, name = source, name or "<upload>"
        if not data:
            raise InputError(f"{name}: empty file (0 bytes)")
    else:
        data, name = read_bytes(source), name or str(source)
    from skinseg.shared.dicom import looks_like_dicom

    if looks_like_dicom(data, name):
        from skinseg.shared.dicom import read_dicom

        d = read_dicom(data, name, max_pixels())
        return LoadedImage(d.rgb, d.rgb.shape[0], d.rgb.shape[1], 1, d.header, d.spacing_mm)
    size = probe_size(data)  # decode_image refuses a size above the limit from it
    is_jpeg = data[:2] == b"\xff\xd8"
    reduce = choose_reduce(max(size), target_long_side) if (size and is_jpeg) else 1
    if reduce > 1:
        rgb = decode_image(data, name, reduce)
        h, w = rgb.shape[:2]
        # EXIF may turn the image: the header orientation that maps onto the reduced decode is the full size.
        fits = {(fw, fh) for fw, fh in (size, size[::-1]) if -(-fw // reduce) == w and -(-fh // reduce) == h}
        if len(fits) == 1:
            fw, fh = fits.pop()
            return LoadedImage(rgb, fh, fw, reduce)
        # both fit (a near-square image, e.g. 1000x999 at 1/8 is 125x125 either way round, so a turn cannot be
        # told) or neither does: the full decode knows
    rgb = decode_image(data, name)
    return LoadedImage(rgb, rgb.shape[0], rgb.shape[1])


def image_kind(data: bytes) -> str | None:
    """The format of an image file from its first bytes (jpeg, png, webp, tiff, bmp, dicom), or None."""
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Full-resolution RGB uint8 HxWx3."""
    return load_image(path).rgb


def _decode_mask(path: str | os.PathLike[str]) -> np.ndarray:
    name = str(path)
    data = read_bytes(path)
    _check_pixels(probe_size(data), name)
    if (why := png_problem(data)) is not None:
        raise InputError(f"{name}: damaged PNG mask ({why})")
    return _imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH, name, "mask")


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask as single-channel uint8 (not yet binarized), oriented by the same EXIF rule as images."""
    return _to_uint8(_decode_mask(path))


def read_binary_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, str | None]:
    """A ground-truth mask as bool, by one rule (docs/segment.md, "Masks"), and a note when it was not stored as
    0/255: two levels (0/1, 0/65535, 10/200 ...): the higher is lesion; more levels (anti-aliased):
    lesion from half the range up (128 of 8 bits, 32768 of 16); one level: 0 is no lesion, the full
    value all lesion. Anything else (a label map 0-10, one grey value) is an InputError, never a silent
    empty mask."""
    m = _decode_mask(path)
    if m.dtype not in (np.uint8, np.uint16):
        m = _to_uint8(m)
    top = 255 if m.dtype == np.uint8 else 65535
    counts = np.bincount(m.ravel(), minlength=top + 1)
    levels = np.flatnonzero(counts)
    bits = "16-bit" if top == 65535 else "8-bit"
    if len(levels) == 1:
        v = int(levels[0])
        if v in (0, top):
            return m == top, None if top == 255 else f"{bits} mask"
        raise InputError(f"{path}: the mask holds only the value {v}: not a binary mask (expected 0 and 255, or "
                         "two levels)")
    if len(levels) == 2:
        lo, hi = int(levels[0]), int(levels[1])
        note = None if (lo, hi, top) == (0, 255, 255) else f"{bits} mask with levels {lo}/{hi}: {hi} = lesion"
        return m == hi, note
    half = (top + 1) // 2
    if levels[-1] < half:
        raise InputError(f"{path}: mask values {int(levels[0])}-{int(levels[-1])} ({len(levels)} levels, all below "
                         f"{half}): a label map, not a binary mask; save lesion as 255 and background as 0")
    return m >= half, f"{bits} mask with {len(levels)} grey levels: lesion from {half} up"


def binarize(mask: np.ndarray) -> np.ndarray:
    """Lesion = value >= 128 (ISIC masks are 0/255; the 256 px set was thresholded at 128)."""
    return mask >= 128


# Masks are long runs of 0 and 255: no PNG row filter is both the fastest and the smallest for them.
FAST_PNG = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if hasattr(cv2, "IMWRITE_PNG_FILTER") else []


def encode(ext: str, img: np.ndarray, quality: int = 92) -> bytes:
    """Encode RGB (HxWx3) or single-channel (HxW, bool or uint8) pixels as `ext` ('.png', '.jpg').
    A bool mask becomes a standard 8-bit single-channel 0/255 PNG."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    if img.dtype == bool:
        img = np.multiply(img, 255, dtype=np.uint8)
        params = FAST_PNG if ext == ".png" else params
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()
