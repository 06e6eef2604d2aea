"""DICOM test files made from the ISIC fixtures the repository ships: VL Photographic Image objects of
one study in every transfer syntax skinseg reads, and hostile ones. Nothing is downloaded.

JPEG Baseline/Extended files wrap a JPEG stream as a dermatoscope's DICOM export does (YCbCr, 4:2:2);
JPEG Lossless needs dcmtk's `dcmcjpeg` (scripts/test.sh installs dcmtk); JPEG 2000 and RLE are
pydicom's own encoders.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    RLELossless,
    generate_uid,
)

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
SYNTAXES = ("rgb", "ybr_full", "jpeg-baseline", "jpeg-extended", "jpeg-lossless", "jpeg2000", "rle")


def photo(rgb: np.ndarray, study: str, *, series: str | None = None, spacing: float | None = None,
          instance: int = 1, patient: str = "SKINSEG^TEST", patient_id: str = "TEST-0001") -> Dataset:
    """An uncompressed RGB VL Photographic Image of `rgb` (HxWx3 uint8) in study `study`."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VL_PHOTOGRAPHIC
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = VL_PHOTOGRAPHIC, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient_id, "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study, "20261205", "101500"
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", "ACC1"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series or generate_uid(), 1, "XC"
    ds.Laterality = ""
    ds.Manufacturer, ds.InstanceNumber = "Test dermatoscope", instance
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20261205", "101500", "20261205101500"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ""
    ds.AcquisitionContextSequence = []
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    if spacing is not None:
        ds.PixelSpacing = [spacing, spacing]
    ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    return ds


def _jpeg(rgb: np.ndarray) -> bytes:
    """A baseline JPEG of `rgb` in YCbCr 4:2:2, as dermatoscopes write them."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    return buf.tobytes()


def in_syntax(ds: Dataset, syntax: str, tmp: Path | None = None) -> Dataset:
    """`ds` (uncompressed RGB) re-encoded as `syntax` (one of SYNTAXES)."""
    rgb = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, 3)
    if syntax == "rgb":
        return ds
    if syntax == "ybr_full":  # uncompressed YCbCr, full resolution (PS3.3 C.7.6.3.1.2)
        ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., [0, 2, 1]]
        ds.PhotometricInterpretation, ds.PixelData = "YBR_FULL", ycc.tobytes()
        return ds
    if syntax in ("jpeg-baseline", "jpeg-extended"):
        ds.PixelData = encapsulate([_jpeg(rgb)])
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation, ds.LossyImageCompression = "YBR_FULL_422", "01"
        ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = "10", "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if syntax == "jpeg-baseline" else JPEGExtended12Bit
        return ds
    if syntax == "jpeg2000":
        ds.compress(JPEG2000Lossless, rgb, photometric_interpretation="RGB")
        return ds
    if syntax == "rle":
        ds.compress(RLELossless, rgb)
        return ds
    if syntax == "jpeg-lossless":
        dcmcjpeg = shutil.which("dcmcjpeg")
        assert dcmcjpeg, "dcmtk's dcmcjpeg makes the JPEG Lossless file: bash scripts/test.sh installs dcmtk"
        assert tmp is not None
        src, dst = tmp / f"{ds.SOPInstanceUID}.raw.dcm", tmp / f"{ds.SOPInstanceUID}.jl.dcm"
        ds.save_as(src, enforce_file_format=True)
        subprocess.run([dcmcjpeg, "+e1", str(src), str(dst)], check=True, capture_output=True)
        import pydicom

        out = pydicom.dcmread(dst)
        src.unlink()
        dst.unlink()
        return out
    raise ValueError(syntax)


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def hostile(good: Dataset, kind: str, folder: Path) -> Path:
    """A broken or unsuitable DICOM file next to a good one (`good`: uncompressed RGB); the name is the kind."""
    path = folder / f"{kind}.dcm"
    ds = copy.deepcopy(good)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if kind == "truncated":
        data = _bytes(ds)
        path.write_bytes(data[: len(data) // 3])
        return path
    if kind == "preamble-then-garbage":
        path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 40)
        return path
    if kind == "short-pixel-data":
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    elif kind == "huge-header":
        ds.Rows = ds.Columns = 65535  # the largest US value: 4.3 GP, refused before any decoding
        ds.PixelData = ds.PixelData[:1024]
    elif kind == "wrong-photometric":
        ds.PhotometricInterpretation = "CMYK"
    elif kind == "multi-frame":
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2
    elif kind == "monochrome":
        grey = np.frombuffer(ds.PixelData, np.uint8)[::3].tobytes()
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelData = 1, "MONOCHROME2", grey
        del ds.PlanarConfiguration
    elif kind == "16-bit":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = ds.PixelData * 2
    elif kind == "no-pixel-data":
        del ds.PixelData
        ds.Modality = "SR"
    elif kind == "pdf":
        del ds.PixelData
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
        ds.Modality, ds.MIMETypeOfEncapsulatedDocument = "DOC", "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4 not really"
    elif kind == "dicomdir":
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.FileSetID, ds.DirectoryRecordSequence = "SKINSEG", []
    else:
        raise ValueError(kind)
    return write(ds, path)


HOSTILE = {  # kind -> words the error row must hold
    "truncated": "DICOM",
    "preamble-then-garbage": "DICOM",
    "short-pixel-data": "shorter than Rows x Columns x 3",
    "huge-header": "above the",
    "wrong-photometric": "'CMYK'",
    "multi-frame": "multi-frame",
    "monochrome": "monochrome",
    "16-bit": "16-bit",
    "no-pixel-data": "without pixel data",
    "pdf": "PDF",
    "dicomdir": "DICOMDIR",
}


def _bytes(ds: Dataset) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
