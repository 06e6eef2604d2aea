"""Scoring a deployed ONNX model: run it through the engine infer uses and score each image against
ground truth at the mask's own resolution (one row per image; bad inputs are error rows)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from skinseg.inference.postprocess import postprocess
from skinseg.inference.review import needs_review, review_figures
from skinseg.inference.segmenter import Segmenter
from skinseg.runner.encodings import mask_png
from skinseg.shared import files
from skinseg.shared.errors import InputError
from skinseg.shared.images import read_binary_mask
from skinseg.shared.metrics import METRICS, aggregate, scores

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
COLUMNS = ["model", "file", "status", *METRICS, "confidence", "review", "width", "height", "seconds", "error"]


@dataclass
class ModelResult:
    label: str
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[float, list[float]] = field(default_factory=lambda: {t: [] for t in THRESHOLDS})
    worst: list[tuple[float, Path, np.ndarray, np.ndarray, np.ndarray, bool]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)  # how masks not stored as 0/255 were read -> count

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]


def model_labels(paths: list[Path]) -> list[str]:
    """Short unique names for the models: file stems, with their folder when two share a stem, and ~2,
    ~3 when the same file is given twice (every model given is scored under its own label)."""
    files_per_stem: dict[str, set[Path]] = {}
    for p in paths:
        files_per_stem.setdefault(p.stem, set()).add(Path(p).resolve())
    labels = [f"{p.parent.name}/{p.stem}" if len(files_per_stem[p.stem]) > 1 else p.stem for p in paths]
    out: list[str] = []
    for label in labels:
        name, i = label, 1
        while name in out:
            i += 1
            name = f"{label}~{i}"
        out.append(name)
    return out


def _preview(rgb: np.ndarray, truth: np.ndarray, pred: np.ndarray, long_side: int = 320) -> tuple:
    import cv2

    from skinseg.shared.render import fit

    small = fit(rgb, long_side, upscale=True)
    size = (small.shape[1], small.shape[0])
    shrink = lambda m: cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)  # noqa: E731
    return small, shrink(truth), shrink(pred)


def evaluate_model(seg: Segmenter, label: str, pairs: list[tuple[Path, Path]], save_masks: Path | None,
                   worst_n: int, on_item: Any = None) -> ModelResult:
    """Score one model on every pair; bad inputs become error rows, the run goes on."""
    res = ModelResult(label, seg.model_path)
    names = files.unique_stems([p for p, _ in pairs])  # a.jpg and a.png get a.png and a~2.png
    for (image_path, mask_path), name in zip(pairs, names, strict=True):
        row: dict[str, Any] = dict.fromkeys(COLUMNS, "") | {"model": label, "file": str(image_path)}
        try:
            truth, stored = read_binary_mask(mask_path)
            if stored:
                key = stored.split(":")[0] if "grey levels" in stored else stored
                res.stored[key] = res.stored.get(key, 0) + 1
            loaded = seg.load(image_path)
            if (loaded.height, loaded.width) != truth.shape:
                raise InputError(f"size mismatch: image {loaded.width}x{loaded.height}, "
                                 f"mask {truth.shape[1]}x{truth.shape[0]} ({mask_path.name})")
            pred = seg.predict(loaded)
        except InputError as exc:
            res.rows.append(row | {"status": "error", "error": str(exc)})
            if on_item:
                on_item()
            continue
        s = scores(pred.mask, truth)
        row.update({k: (round(v, 6) if isinstance(v, float) and not np.isnan(v) else ("" if isinstance(v, float)
                                                                                       else v))
                    for k, v in s.items()})
        flagged = needs_review(pred.confidence, seg.review_threshold)
        row.update(status="ok", confidence=pred.confidence, review="yes" if flagged else "no", width=truth.shape[1],
                   height=truth.shape[0], seconds=round(pred.seconds, 3), error="")
        res.rows.append(row)
        for t in THRESHOLDS:
            m = postprocess(pred.probability, replace(seg.post, threshold=t))
            res.sweep[t].append(scores(m, truth, with_hd95=False)["jaccard"])
        if worst_n:
            rgb = loaded.rgb
            res.worst.append((s["jaccard"], image_path, *_preview(rgb, truth, pred.mask), flagged))
            res.worst.sort(key=lambda w: w[0])
            del res.worst[worst_n:]
        if save_masks is not None:
            files.write_bytes(save_masks / f"{name}.png", mask_png(pred.mask))  # the PNG infer writes
        if on_item:
            on_item()
    res.summary = aggregate(res.ok)
    sweep = {t: float(np.mean(v)) for t, v in res.sweep.items() if v}
    if sweep:
        best = max(sweep, key=lambda t: sweep[t])
        res.summary["threshold_sweep"] = sweep
        res.summary["best_threshold"] = {"threshold": best, "mean_jaccard": sweep[best],
                                         "current_threshold": seg.post.threshold}
    if res.ok:  # how well the review flag finds this split's failures, at the engine's threshold
        res.summary["review"] = review_figures([r["confidence"] for r in res.ok], [r["jaccard"] for r in res.ok],
                                               seg.review_threshold)
    res.summary["errors"] = len(res.rows) - len(res.ok)
    return res


