"""Procedural dermoscopy-like images with exact masks, for tests, demos and benchmarks.

Skin-tone background with uneven lighting, an irregular pigmented lesion with darker structures,
hairs crossing it, a dark dermoscope vignette, sensor noise and per-image colour casts. Needs
numpy and OpenCV only, so both sides (and edge tests) can use it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from skinseg.shared import files
from skinseg.shared.images import encode

_SKIN = np.array([[224, 180, 160], [205, 150, 125], [236, 200, 180], [190, 140, 110]], np.float32)
_LESION = np.array([[110, 70, 50], [80, 50, 40], [140, 95, 70], [60, 40, 35]], np.float32)


def _lesion_alpha(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft lesion alpha in [0, 1]: an irregular blob from a radius with random harmonics."""
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    r0 = min(h, w) * rng.uniform(0.15, 0.33)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(yy - cy, (xx - cx) * rng.uniform(0.7, 1.3))
    radius = np.full_like(theta, r0)
    for k in range(2, 7):
        radius += r0 * rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    dist = np.hypot(yy - cy, xx - cx)
    edge = max(1.0, r0 * 0.04)
    return np.clip((radius - dist) / edge + 0.5, 0.0, 1.0)


def synth_pair(height: int, width: int, rng: np.random.Generator | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its exact bool mask (lesion = alpha >= 0.5)."""
    rng = np.random.default_rng(rng)
    gh, gw = height, width
    if max(height, width) > 1024:  # draw the geometry at <= 1024 px, then upscale smoothly
        s = 1024 / max(height, width)
        gh, gw = max(8, round(height * s)), max(8, round(width * s))
    alpha = _lesion_alpha(gh, gw, rng)
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.1, 3)
    lesion = _LESION[rng.integers(len(_LESION))] * rng.uniform(0.85, 1.15, 3)
    img = np.empty((gh, gw, 3), np.float32)
    light = cv2.resize(rng.uniform(0.85, 1.1, (3, 3)).astype(np.float32), (gw, gh), interpolation=cv2.INTER_CUBIC)
    img[:] = skin
    img *= light[..., None]
    # darker structures inside the lesion (pigment network / globules)
    blobs = cv2.GaussianBlur(rng.uniform(0, 1, (gh, gw)).astype(np.float32), (0, 0), max(1.0, gw / 60))
    blobs = (blobs - blobs.min()) / (np.ptp(blobs) + 1e-6)
    pigment = lesion[None, None, :] * (0.75 + 0.5 * blobs[..., None])
    img = img * (1 - alpha[..., None]) + pigment * alpha[..., None]
    if max(height, width) > 1024:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = alpha >= 0.5
    # hairs: dark curves across the image (they do not belong to the mask)
    for _ in range(int(rng.integers(0, 6))):
        pts = np.stack([rng.uniform(0, width, 4), rng.uniform(0, height, 4)], 1)
        t = np.linspace(0, 1, 50)[:, None]
        curve = ((1 - t) ** 3 * pts[0] + 3 * (1 - t) ** 2 * t * pts[1] + 3 * (1 - t) * t**2 * pts[2]
                 + t**3 * pts[3])
        thick = max(1, round(max(height, width) / 300 * rng.uniform(0.5, 1.5)))
        cv2.polylines(img, [curve.astype(np.int32)], False, (40.0, 30.0, 25.0), thick, cv2.LINE_AA)
    # dermoscope vignette: dark corners
    yy, xx = np.ogrid[0:height, 0:width]
    rr = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2)).astype(np.float32)
    vig = np.clip(1.0 - np.maximum(rr - rng.uniform(0.95, 1.25), 0) * 3.0, 0.05, 1.0)
    img *= vig[..., None]
    img += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_dataset(folder: Path, count: int, size: tuple[int, int] = (96, 128), seed: int = 0,
                  layout: str = "seed") -> Path:
    """Write `count` synthetic pairs as `<folder>/images/*.jpg` + `<folder>/masks/*_segmentation.png`.

    size is (height, width). layout 'seed' = images/ + masks/ folders; 'flat' = one folder.
    """
    img_dir = folder / "images" if layout == "seed" else folder
    mask_dir = folder / "masks" if layout == "seed" else folder
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb, mask = synth_pair(size[0], size[1], rng=seed * 100_003 + i)
        files.write_bytes(img_dir / f"SYN_{seed:03d}{i:05d}.jpg", encode(".jpg", rgb, 95))
        files.write_bytes(mask_dir / f"SYN_{seed:03d}{i:05d}_segmentation.png", encode(".png", mask))
    return folder


def png_header(width: int, height: int) -> bytes:
    """Only the signature and the IHDR chunk (valid CRC) of an 8-bit RGB PNG declaring width x height:
    what a decompression bomb shows before its data, for size guards that must refuse from the header."""
    import zlib

    chunk = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


def zero_png(width: int, height: int, bits: int = 8) -> bytes:
    """A valid RGB PNG of zeros of any size, compressed row by row (never held whole): 14000 x 14000 at
    16 bits is about 1 MB on disk and 1.2 GB decoded, the image bomb that size guards are tested with."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bits, 2, 0, 0, 0])
    z, row = zlib.compressobj(9), b"\x00" * (1 + width * 3 * bits // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
