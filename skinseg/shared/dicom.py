"""DICOM images in: single-frame, 8-bit colour objects (VL Photographic, VL Microscopic, Secondary
Capture, a dermoscopy object) in the transfer syntaxes pydicom decodes with pylibjpeg (uncompressed,
JPEG Baseline/Extended/Lossless, JPEG 2000, RLE), brought to RGB, with the millimetre scale where
the file states one. The one image reader (shared/images.py) calls this; pydicom comes with the
`[dicom]` extra and is imported only when a DICOM file is read.

An object is taken by what it holds, not by its SOP class UID (the dermoscopy object the DICOM
working group is defining will have a UID of its own): colour pixel data in one frame. Everything
else is one clear error for that input, checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np

from skinseg.shared.errors import InputError, megapixels

DICOM_EXTENSIONS = (".dcm", ".dicom")
DICOM_MEDIA_TYPE = "application/dicom"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# SOP classes that are never an image, named in the error (the rest: judged by what they hold)
NOT_IMAGES = {
    SEG_CLASS: "a DICOM Segmentation (a result, such as skinseg writes), not an image to segment",
    DICOMDIR_CLASS: "a DICOMDIR (an index of files); give the image files it lists",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF document, not an image",
    "1.2.840.10008.5.1.4.1.1.104.2": "an encapsulated CDA document, not an image",
}
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


@dataclass
class DicomImage:
    rgb: np.ndarray  # HxWx3 uint8
    header: Any  # the source's pydicom Dataset without its pixel data: what a SEG references and copies
    spacing_mm: float | None  # millimetres per pixel, when the file states a square one


def looks_like_dicom(data: bytes, name: str | None = None) -> bool:
    """The DICM preamble, or a .dcm name (files written without the 128-byte preamble)."""
    return data[128:132] == b"DICM" or (name is not None and PurePath(name).suffix.lower() in DICOM_EXTENSIONS)


def _pydicom() -> Any:
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401
    except ImportError:
        from skinseg.shared.install import install_hint

        raise InputError(f"DICOM input needs the [dicom] extra: {install_hint('dicom')}") from None
    return pydicom


def _header(data: bytes, name: str) -> Any:
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise InputError(f"{name}: not a readable DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None


def _number(ds: Any, keyword: str, name: str) -> int:
    try:
        return int(ds[keyword].value)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{name}: DICOM image without a valid {keyword}; not a readable image") from None


def spacing_of(ds: Any) -> float | None:
    """Millimetres per pixel from Pixel Spacing, else Imager Pixel Spacing; None when absent, not
    positive or not square (a rectangular pixel has no one scale: measurements stay in px)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            rows, cols = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(rows) and rows > 0 and abs(rows - cols) <= 1e-3 * rows:
            return rows
    return None


def check_image(ds: Any, name: str, max_pixels: int) -> tuple[int, int]:
    """(rows, columns) of a single-frame 8-bit colour image; anything else is one InputError saying why."""
    sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop in NOT_IMAGES:
        raise InputError(f"{name}: {NOT_IMAGES[sop]}")
    if "DirectoryRecordSequence" in ds:
        raise InputError(f"{name}: {NOT_IMAGES[DICOMDIR_CLASS]}")
    if "EncapsulatedDocument" in ds:
        raise InputError(f"{name}: an encapsulated document, not an image")
    if "PixelData" not in ds:
        kind = ds.get("Modality", "") or "no modality"
        raise InputError(f"{name}: a DICOM object without pixel data ({kind}); not an image")
    frames = ds.get("NumberOfFrames", 1)
    if frames not in (None, "") and int(frames) > 1:
        raise InputError(f"{name}: a multi-frame DICOM object ({int(frames)} frames); skinseg reads single-frame "
                         "colour images: export each frame as its own image")
    rows, cols = _number(ds, "Rows", name), _number(ds, "Columns", name)
    if rows < 1 or cols < 1:
        raise InputError(f"{name}: DICOM image of {cols}x{rows} pixels; not a readable image")
    if rows * cols > max_pixels:
        raise InputError(f"{name}: {cols}x{rows} is {megapixels(rows * cols)} MP, above the {megapixels(max_pixels)} "
                         "MP limit; raise SKINSEG_MAX_PIXELS if it is genuine")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = ds.get("SamplesPerPixel")
    if photometric.startswith("MONOCHROME") or photometric == "PALETTE COLOR" or samples == 1:
        raise InputError(f"{name}: a monochrome DICOM image ({photometric or 'one sample per pixel'}); dermoscopy "
                         "needs a colour image")
    if photometric not in COLOUR or samples != 3:
        raise InputError(f"{name}: DICOM PhotometricInterpretation {photometric!r} with {samples} samples per pixel "
                         f"is not a colour image skinseg reads ({', '.join(COLOUR)})")
    bits = ds.get("BitsAllocated")
    if bits != 8:
        raise InputError(f"{name}: a {bits}-bit DICOM image; skinseg reads 8-bit colour images")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not syntax.is_compressed:
        per_pixel = 2 if photometric == "YBR_FULL_422" else 3
        need, have = rows * cols * per_pixel, len(ds.PixelData)
        if have < need:
            raise InputError(f"{name}: DICOM pixel data is {have} bytes, shorter than Rows x Columns x "
                             f"{per_pixel} = {need}; the file is damaged or truncated")
    return rows, cols


def read_dicom(data: bytes, name: str, max_pixels: int) -> DicomImage:
    """Decode a DICOM image file to RGB; its header (without pixels) and scale come along."""
    ds = _header(data, name)
    rows, cols = check_image(ds, name, max_pixels)
    try:
        from pydicom.pixels import pixel_array

        rgb = pixel_array(ds, as_rgb=True)  # YBR_* -> RGB; decoders that already give RGB are known to it
    except Exception as exc:  # noqa: BLE001 - a decoder's own error, for this input only
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        said = syntax.name if syntax is not None else "unknown transfer syntax"
        raise InputError(f"{name}: cannot decode its DICOM pixel data ({said}): {str(exc)[:160]}") from None
    if rgb.shape != (rows, cols, 3) or rgb.dtype != np.uint8:
        raise InputError(f"{name}: DICOM pixel data decodes to {rgb.dtype} {rgb.shape}, not {rows}x{cols} RGB")
    del ds.PixelData
    return DicomImage(np.ascontiguousarray(rgb), ds, spacing_of(ds))
