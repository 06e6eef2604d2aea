"""The one image reader: every command reads pixels through here.

Rules, applied everywhere (training, export calibration, infer, eval, check-data):
- Orientation: EXIF orientation is applied, to images and to masks alike (as OpenCV, browsers and
  the ISIC viewers do), so a rotated JPEG and its PNG mask stay aligned.
- Colour: images come back RGB, uint8, HxWx3 (grey, RGBA, palette, CMYK, 16-bit are converted).
- Masks come back single-channel; `binarize` turns them into bool at 128 (the ISIC convention).
- Size: images above `max_pixels()` are refused from their header, before any allocation.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 200_000_000  # 6700x4500 ISIC images are 30 MP; 200 MP leaves room, refuses bombs
# OpenCV's own guard for formats we cannot probe; read once by OpenCV at first decode.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402

from skinseg.shared.errors import InputError  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def max_pixels() -> int:
    return int(os.environ.get("SKINSEG_MAX_PIXELS", DEFAULT_MAX_PIXELS))


@dataclass
class LoadedImage:
    """Decoded RGB pixels plus the size of the full-resolution, oriented image."""

    rgb: np.ndarray  # HxWx3 uint8, possibly decoded at 1/reduce of full size
    height: int  # full-resolution height after orientation
    width: int
    reduce: int = 1


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied; make it readable") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a folder, not an image") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{path}: empty file (0 bytes)")
    return data


def probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding, or None for other formats.

    Written here because OpenCV has no header-only reader; it lets us refuse decompression bombs and
    pick a reduced JPEG decode before allocating anything.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + seg_len
    return None


def _check_pixels(size: tuple[int, int] | None, name: str) -> None:
    if size is not None and size[0] * size[1] > max_pixels():
        raise InputError(
            f"{name}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.0f} MP, above the "
            f"{max_pixels() / 1e6:.0f} MP limit; raise SKINSEG_MAX_PIXELS if it is genuine"
        )


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    img = img.astype(np.float32)
    if img.size and float(np.nanmax(img)) <= 1.0:
        img = img * 255.0
    return np.clip(np.nan_to_num(img), 0, 255).round().astype(np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", reduce: int = 1) -> np.ndarray:
    """Decode bytes to RGB uint8 HxWx3, oriented by EXIF; `reduce` in {1,2,4,8} (JPEG DCT scaling)."""
    _check_pixels(probe_size(data), name)
    buf = np.frombuffer(data, np.uint8)
    flags = _REDUCED_FLAGS[reduce] if reduce > 1 else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot decode ({str(exc).strip().splitlines()[-1]})") from exc
    if img is None or img.size == 0:
        raise InputError(f"{name}: not a readable image (corrupt, truncated or unsupported format)")
    img = _to_uint8(img)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def choose_reduce(long_side: int, target_long_side: int | None) -> int:
    """Largest JPEG reduction 2/4/8 that still decodes at least `target_long_side` pixels."""
    if not target_long_side:
        return 1
    factor = 1
    for f in (2, 4, 8):
        if long_side / f >= target_long_side:
            factor = f
    return factor


def load_image(path: str | os.PathLike[str], target_long_side: int | None = None) -> LoadedImage:
    """Read an image for a model working at `target_long_side` px (None = full resolution).

    When the working scale is half the native size or less, JPEGs are decoded at 1/2, 1/4 or 1/8
    size directly instead of decoding e.g. 30 MP and shrinking.
    """
    name = str(path)
    data = read_bytes(path)
    size = probe_size(data)
    _check_pixels(size, name)
    is_jpeg = data[:2] == b"\xff\xd8"
    reduce = choose_reduce(max(size), target_long_side) if (size and is_jpeg) else 1
    if reduce > 1:
        rgb = decode_image(data, name, reduce)
        h, w = rgb.shape[:2]
        # EXIF may rotate: pick the header orientation that maps onto the reduced decode.
        for fw, fh in (size, size[::-1]):
            if -(-fw // reduce) == w and -(-fh // reduce) == h:
                return LoadedImage(rgb, fh, fw, reduce)
        reduce = 1  # unexpected geometry: fall back to a full decode
    rgb = decode_image(data, name)
    return LoadedImage(rgb, rgb.shape[0], rgb.shape[1], 1)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Full-resolution RGB uint8 HxWx3."""
    return load_image(path).rgb


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A mask as single-channel uint8 (not yet binarized), oriented by the same EXIF rule as images."""
    name = str(path)
    data = read_bytes(path)
    _check_pixels(probe_size(data), name)
    try:
        m = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot decode mask") from exc
    if m is None or m.size == 0:
        raise InputError(f"{name}: not a readable mask image")
    return _to_uint8(m)


def binarize(mask: np.ndarray) -> np.ndarray:
    """Lesion = value >= 128 (ISIC masks are 0/255; the 256 px set was thresholded at 128)."""
    return mask >= 128


def encode(ext: str, img: np.ndarray, quality: int = 92) -> bytes:
    """Encode RGB (HxWx3) or single-channel (HxW, bool or uint8) pixels as `ext` ('.png', '.jpg')."""
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()
