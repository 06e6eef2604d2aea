"""A corpus of nasty inputs, generated (never downloaded): what users' archives really contain."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from skinseg.shared.images import encode
from skinseg.shared.synthetic import png_header
from tests.edge.test_images import with_exif_orientation


def _pil(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def lesion_rgb(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 220, np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 0] = 30
    return img


def lesion_mask(name: str) -> np.ndarray:
    """The lesion the test model (probability = 1 - red / 255) must find in the corpus's readable file
    `name`, from how it was written: the red-30 square of `lesion_rgb` where the red channel survives;
    none in grey (luma 163 of red 30, green and blue 220: probability 0.36) or in a one-pixel crop of
    the background. EXIF orientation 6 shows the image turned a quarter clockwise."""
    if name.startswith("thin"):
        return lesion_rgb(10, 100_000)[..., 0] < 128
    square = lesion_rgb(60, 80)[..., 0] < 128
    if name == "exif-rotated.jpg":
        return np.rot90(square, k=-1)
    if name == "grey.png":
        return np.zeros_like(square)
    if name == "one-pixel.png":
        return np.zeros((1, 1), bool)
    return square


def build(folder: Path) -> dict[str, str]:
    """Write the corpus; returns {file name: 'ok' | 'error'} = what infer must report for each."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = lesion_rgb(60, 80)
    pil = Image.fromarray(rgb)
    files: dict[str, tuple[bytes, str]] = {
        "zero-bytes.jpg": (b"", "error"),
        "truncated.jpg": (encode(".jpg", lesion_rgb(200, 200))[:300], "error"),
        "text-named.jpg": (b"this is a text file, not a JPEG\n", "error"),
        "bomb-header.png": (png_header(100_000, 100_000), "error"),
        "rgb16.png": (cv2.imencode(".png", (rgb[..., ::-1].astype(np.uint16) * 257))[1].tobytes(), "ok"),
        "rgb16.tif": (cv2.imencode(".tiff", (rgb[..., ::-1].astype(np.uint16) * 257))[1].tobytes(), "ok"),
        "rgba.png": (_pil(pil.convert("RGBA"), "PNG"), "ok"),
        "palette.png": (_pil(pil.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok"),
        "grey.png": (_pil(pil.convert("L"), "PNG"), "ok"),
        "cmyk.jpg": (_pil(pil.convert("CMYK"), "JPEG", quality=95), "ok"),
        "exif-rotated.jpg": (with_exif_orientation(encode(".jpg", rgb, 95), 6), "ok"),
        "one-pixel.png": (encode(".png", rgb[:1, :1]), "ok"),
        "thin 10x100000.png": (encode(".png", lesion_rgb(10, 100_000)), "ok"),
        "naïve ünïcödé name.png": (encode(".png", rgb), "ok"),
        "webp.webp": (cv2.imencode(".webp", rgb[..., ::-1])[1].tobytes(), "ok"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    expected = {name: want for name, (_, want) in files.items()}
    locked = folder / "unreadable.png"  # as root (CI), `permissions_as_for_a_user` makes it unreadable too
    locked.write_bytes(encode(".png", rgb))
    locked.chmod(0)
    expected["unreadable.png"] = "error"
    return expected


def permissions_as_for_a_user(monkeypatch) -> None:
    """Root reads files whatever their mode; a user does not. For in-process runs as root, reading a file
    with no read bits raises the PermissionError a user would get, so the unreadable case is tested there
    too (CI runs as root)."""
    if os.geteuid() != 0:
        return
    import builtins
    import pathlib
    import stat

    def locked(path) -> bool:
        try:
            return stat.S_IMODE(os.stat(path).st_mode) & 0o444 == 0
        except (OSError, TypeError, ValueError):
            return False

    real_read, real_open = pathlib.Path.read_bytes, builtins.open

    def read_bytes(self):
        if locked(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    def opener(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and locked(file):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    monkeypatch.setattr(builtins, "open", opener)
