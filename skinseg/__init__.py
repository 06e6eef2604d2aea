"""skinseg: skin-lesion segmentation for dermoscopy, from training to the edge.

The top level stays import-light: `Segmenter` (ONNX Runtime) is loaded on first use, and
nothing here ever imports TensorFlow.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

DEFAULT_MAX_PIXELS = 200_000_000  # 6700x4500 ISIC images are 30 MP; 200 MP leaves room, refuses bombs
# OpenCV reads its own pixel guard once, when cv2 is first imported: set it before any module of
# ours can import cv2, so the limit holds for every format whatever the import order. It follows
# SKINSEG_MAX_PIXELS, so raising our limit for a genuine large image raises OpenCV's too (a bad value
# is reported by the reader, shared/images.py, and OpenCV keeps the default meanwhile).
_asked = os.environ.get("SKINSEG_MAX_PIXELS", "").strip()
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", _asked if _asked.isdigit() and int(_asked) > 0
                      else str(DEFAULT_MAX_PIXELS))
# Library caches go to the system temp folder, not the user's home: a run writes only to its output
# folder and there (ONNX Runtime's telemetry database follows XDG_CACHE_HOME, matplotlib's font cache
# MPLCONFIGDIR). Set either yourself to choose another place.
_TMP = os.path.join(__import__("tempfile").gettempdir(), "skinseg-cache")
os.environ.setdefault("XDG_CACHE_HOME", _TMP)
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_TMP, "matplotlib"))

FROM_MODEL = "model"  # a --scale value meaning: the working scale the model records (options and scale share it)

__version__ = "0.1.0"
__all__ = ["Segmenter", "Prediction", "__version__"]

if TYPE_CHECKING:
    from skinseg.inference.segmenter import Prediction, Segmenter


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "Prediction"):
        from skinseg.inference import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'skinseg' has no attribute {name!r}")
