"""The mask as a DICOM Segmentation object of its source image, written with highdicom.

One binary segment, "Skin lesion" (SNOMED CT 95324001) in the category "Morphologically abnormal
structure" (49755003), made by an automatic algorithm identified as skinseg with its version and the
model file's sha256. The SEG joins the source's study in a series of its own; the patient and study
come from the source (highdicom copies them; nothing is invented); it references the source instance.
UIDs derive from the source instance and the model, so segmenting the same image with the same model
again gives the same SEG (a PACS keeps one, not two).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from skinseg import __version__

SERIES_NUMBER = 900  # the SEG series; the source's series keep their own numbers
LESION = ("95324001", "SCT", "Skin lesion")
CATEGORY = ("49755003", "SCT", "Morphologically abnormal structure")


def seg_dataset(source: Any, mask: np.ndarray, model_name: str, model_sha256: str) -> Any:
    """A highdicom Segmentation of `mask` (HxW bool, the source's size) over `source` (its header)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    header = source.copy()
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):  # a photo's scale is no plane geometry for a SEG;
        if keyword in header:  # highdicom would write Pixel Measures it cannot read back (no slice thickness)
            delattr(header, keyword)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="skinseg", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source=model_name[:64], parameters={"model_sha256": model_sha256})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Skin lesion", segmented_property_category=Code(*CATEGORY),
        segmented_property_type=Code(*LESION), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    seg = hd.seg.Segmentation(
        source_images=[header], pixel_array=mask.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[segment],
        series_instance_uid=generate_uid(entropy_srcs=[str(source.SeriesInstanceUID), model_sha256, "series"]),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model_sha256, "seg"]),
        instance_number=int(source.get("InstanceNumber") or 1), manufacturer="skinseg",
        manufacturer_model_name=model_name[:64], software_versions=__version__,
        device_serial_number=model_sha256[:64], series_description="skinseg lesion segmentation",
        content_label="LESION", content_description="skinseg lesion mask", omit_empty_frames=False)
    seg.PatientOrientation = source.get("PatientOrientation", "")  # General Image, type 2C for photographs
    return seg


def part10(ds: Any) -> bytes:
    """A dataset as a DICOM Part 10 file's bytes."""
    from pydicom import dcmwrite

    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()

