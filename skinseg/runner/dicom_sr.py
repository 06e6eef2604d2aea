"""The lesion's measurements as a DICOM Structured Report (TID 1500 Measurement Report), written with
highdicom: the area and the largest diameter (the maximum Feret diameter) of the lesion segment of
the SEG, in millimetres. Written only where the image's scale is known: a size in pixels is no
clinical measurement, and the scale is never guessed.
"""

from __future__ import annotations

from typing import Any

from skinseg import __version__

SERIES_NUMBER = 901  # the SR series, next to the SEG series (900)


def sr_dataset(source: Any, seg: Any, area_mm2: float, diameter_mm: float, model_name: str,
               model_sha256: str) -> Any:
    """A Comprehensive 3D SR over `source` and its `seg` (both pydicom Datasets)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name="skinseg", version=__version__,
                                              parameters=[f"model {model_name[:40]}", f"sha256 {model_sha256}"])
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=1, segment_number=1,
        source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID))
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Area, value=round(area_mm2, 3), unit=codes.UCUM.SquareMillimeter,
                          algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.SCT.Diameter, value=round(diameter_mm, 3), unit=codes.UCUM.Millimeter,
                          derivation=codes.SCT.Maximum, algorithm_id=algorithm),
    ]
    roi = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model_sha256, "lesion"]),
            identifier="Skin lesion"),
        referenced_segment=segment, finding_type=codes.SCT.SkinLesion, measurements=measurements,
        algorithm_id=algorithm)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[model_sha256, "device"]), name="skinseg", manufacturer_name="skinseg",
            model_name=model_name[:64]))
    report = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(observer_device_context=device),
                                     procedure_reported=codes.SCT.DermoscopicPhotography, imaging_measurements=[roi])
    content = report[0]
    _segment_not_frame(content)
    return hd.sr.Comprehensive3DSR(
        evidence=[source, seg], content=content,
        series_instance_uid=generate_uid(entropy_srcs=[str(source.SeriesInstanceUID), model_sha256, "sr-series"]),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), model_sha256, "sr"]),
        instance_number=int(source.get("InstanceNumber") or 1), manufacturer="skinseg",
        series_description="skinseg lesion measurements", is_complete=True, is_final=False, is_verified=False)


def _segment_not_frame(item: Any) -> None:
    """A reference to the SEG names its segment, not also its frame: PS3.3 C.17.3.2.2 allows only one of
    Referenced Segment Number and Referenced Frame Number (dciodvfy's rule; highdicom writes both)."""
    for ref in item.get("ReferencedSOPSequence", []):
        if "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" in ref:
            del ref.ReferencedFrameNumber
    for child in item.get("ContentSequence", []):
        _segment_not_frame(child)
