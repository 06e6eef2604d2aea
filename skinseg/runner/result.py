"""`Result`: everything one image gives, with its own serializers (as Ultralytics' `Results` does).

infer's rows and files, Ray workers, the service's JSON and headers and bench's stage timings all
take their figures and encodings from here, so a new output (a flag, a measurement, a DICOM SEG) is
added once and appears everywhere.
"""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skinseg.inference.postprocess import mask_stats
from skinseg.inference.review import needs_review
from skinseg.inference.segmenter import Prediction
from skinseg.runner import encodings
from skinseg.runner.measurements import in_millimetres, max_feret
from skinseg.shared.images import LoadedImage

MASK_FORMATS = ("png", "rle", "polygon")
# results.csv's figure columns, in order (the batch run adds file, status, mask, overlay and error)
FIGURES = ("width", "height", "lesion_area_px", "lesion_fraction", "bbox", "components", "diameter_px",
           "pixel_spacing_mm", "area_mm2", "diameter_mm", "confidence", "review", "tiles", "seconds")


@dataclass
class Result:
    """One image's figures as typed values and its mask; encodings are made on first use."""

    width: int
    height: int
    lesion_area_px: int
    lesion_fraction: float
    bbox: tuple[int, int, int, int] | None  # x, y, w, h of every lesion pixel; None: no lesion
    components: int
    mask: np.ndarray = field(repr=False)  # HxW bool at the image's full resolution
    diameter_px: float = 0.0  # the largest component's maximum Feret diameter
    pixel_spacing: float | None = None  # mm per pixel, when known; else no size in mm
    confidence: float | None = None  # how likely the mask is right (inference/review.py); None: not known
    review_threshold: float | None = None  # below it, `review` says a person should check this mask
    tiles: int | None = None  # None: not known (an output an earlier run wrote)
    seconds: float | None = None
    loaded: LoadedImage | None = field(default=None, repr=False)  # the decode the model saw (for overlays)
    source: str | os.PathLike[str] | bytes | bytearray | None = field(default=None, repr=False)
    dicom_source: Any = field(default=None, repr=False)  # a DICOM input's header: then a SEG can answer it

    @classmethod
    def from_prediction(cls, pred: Prediction, loaded: LoadedImage | None = None,
                        source: str | os.PathLike[str] | bytes | bytearray | None = None,
                        pixel_spacing: float | None = None, review_threshold: float | None = None) -> Result:
        stats = mask_stats(pred.mask, pred.box, pred.components)
        box = pred.box if stats["lesion_area_px"] else None
        if loaded is not None and loaded.pixel_spacing is not None:  # the image's own scale (DICOM) wins
            pixel_spacing = loaded.pixel_spacing
        return cls(pred.width, pred.height, mask=pred.mask, tiles=pred.tiles, loaded=loaded, source=source,
                   dicom_source=None if loaded is None else loaded.dicom,
                   diameter_px=max_feret(pred.mask, box, stats["components"]), pixel_spacing=pixel_spacing,
                   confidence=pred.confidence, review_threshold=review_threshold, **stats)

    @classmethod
    def from_mask(cls, mask: np.ndarray, pixel_spacing: float | None = None) -> Result:
        """The figures of a mask already written (a resumed run's outputs): tiles and time unknown."""
        stats = mask_stats(mask)
        return cls(mask.shape[1], mask.shape[0], mask=mask, diameter_px=max_feret(mask, None, stats["components"]),
                   pixel_spacing=pixel_spacing, **stats)

    @property
    def review(self) -> bool | None:
        """Whether a person should check this mask (its confidence is below the review threshold)."""
        return None if self.confidence is None else needs_review(self.confidence, self.review_threshold)

    @property
    def area_mm2(self) -> float | None:
        return in_millimetres(self.lesion_area_px, self.diameter_px, self.pixel_spacing)[0]

    @property
    def diameter_mm(self) -> float | None:
        return in_millimetres(self.lesion_area_px, self.diameter_px, self.pixel_spacing)[1]

    # -- encodings -------------------------------------------------------------------------------
    @functools.cached_property
    def png(self) -> bytes:
        return encodings.mask_png(self.mask)

    def rle(self) -> dict[str, Any]:
        return encodings.coco_rle(self.mask)

    def polygons(self) -> list[list[list[int]]]:
        return encodings.polygons(self.mask)

    def dicom_files(self, model_name: str, model_sha256: str, report: bool = True) -> dict[str, bytes]:
        """For a DICOM source: 'seg', the mask as a DICOM Segmentation (runner/dicom_seg.py), and with
        `report`, 'sr', the measurements as a TID 1500 report (runner/dicom_sr.py) when the scale is known."""
        from skinseg.runner.dicom_seg import part10, seg_dataset

        if self.dicom_source is None:
            raise ValueError("a DICOM SEG needs a DICOM source image")
        seg = seg_dataset(self.dicom_source, self.mask, model_name, model_sha256)
        out = {"seg": part10(seg)}
        if report and self.area_mm2 is not None and self.diameter_mm is not None and self.lesion_area_px:
            from skinseg.runner.dicom_sr import sr_dataset

            out["sr"] = part10(sr_dataset(self.dicom_source, seg, self.area_mm2, self.diameter_mm, model_name,
                                          model_sha256))
        return out

    def overlay_jpeg(self, long_side: int | None = None) -> bytes:
        if self.loaded is None or self.source is None:
            raise ValueError("an overlay needs the decoded image and its source")
        return encodings.overlay_jpeg(self.source, self.loaded, self.mask, long_side)

    def mask_field(self, fmt: str) -> Any:
        """The mask in one of MASK_FORMATS, as JSON carries it (PNG as base64)."""
        if fmt == "rle":
            return self.rle()
        if fmt == "polygon":
            return self.polygons()
        if fmt == "png":
            return base64.b64encode(self.png).decode("ascii")
        raise ValueError(f"mask format {fmt!r}: choose one of {', '.join(MASK_FORMATS)}")

    # -- figures ---------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The figures as JSON values (bbox as [x, y, w, h], empty when there is no lesion)."""
        return {"width": self.width, "height": self.height, "lesion_area_px": self.lesion_area_px,
                "lesion_fraction": self.lesion_fraction, "bbox": list(self.bbox) if self.bbox else [],
                "components": self.components, "diameter_px": round(self.diameter_px, 1),
                "pixel_spacing_mm": self.pixel_spacing, "area_mm2": self.area_mm2, "diameter_mm": self.diameter_mm,
                "confidence": self.confidence, "review": self.review, "tiles": self.tiles}

    def row(self) -> dict[str, Any]:
        """The figures as results.csv cells (bbox as 'x y w h'; unknown values empty)."""
        return {"width": self.width, "height": self.height, "lesion_area_px": self.lesion_area_px,
                "lesion_fraction": self.lesion_fraction, "bbox": " ".join(map(str, self.bbox)) if self.bbox else "",
                "components": self.components, "diameter_px": round(self.diameter_px, 1),
                "pixel_spacing_mm": "" if self.pixel_spacing is None else self.pixel_spacing,
                "area_mm2": "" if self.area_mm2 is None else self.area_mm2,
                "diameter_mm": "" if self.diameter_mm is None else self.diameter_mm,
                "confidence": "" if self.confidence is None else self.confidence,
                "review": "" if self.review is None else ("yes" if self.review else "no"),
                "tiles": "" if self.tiles is None else self.tiles,
                "seconds": "" if self.seconds is None else round(self.seconds, 3)}

    def headers(self, model_sha256: str) -> dict[str, str]:
        """The figures as response headers, for answers that are the mask PNG itself."""
        row = self.row()
        return {"X-Skinseg-Width": str(self.width), "X-Skinseg-Height": str(self.height),
                "X-Skinseg-Lesion-Area-Px": str(self.lesion_area_px),
                "X-Skinseg-Lesion-Fraction": str(self.lesion_fraction), "X-Skinseg-Bbox": row["bbox"],
                "X-Skinseg-Components": str(self.components), "X-Skinseg-Diameter-Px": str(row["diameter_px"]),
                "X-Skinseg-Area-Mm2": str(row["area_mm2"]), "X-Skinseg-Diameter-Mm": str(row["diameter_mm"]),
                "X-Skinseg-Confidence": str(row["confidence"]), "X-Skinseg-Review": str(row["review"]),
                "X-Skinseg-Tiles": str(row["tiles"]),
                "X-Skinseg-Seconds": f"{self.seconds or 0:.3f}", "X-Skinseg-Model-Sha256": model_sha256}
