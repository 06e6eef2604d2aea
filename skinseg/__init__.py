"""skinseg: skin-lesion segmentation for dermoscopy, from training to the edge.

The top level stays import-light: `Segmenter` (ONNX Runtime) is loaded on first use, and
nothing here ever imports TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Segmenter", "Prediction", "__version__"]

if TYPE_CHECKING:
    from skinseg.inference.segmenter import Prediction, Segmenter


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "Prediction"):
        from skinseg.inference import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'skinseg' has no attribute {name!r}")
