"""`skinseg eval`: run deployed ONNX models through the engine infer uses, score them against ground
truth at the masks' own resolution, and write metrics.csv, summary.json and pictures."""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from skinseg import ui
from skinseg.evaluation.metrics import FAIL_BELOW, METRICS, aggregate, scores
from skinseg.inference.postprocess import postprocess
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import files
from skinseg.shared.dataset import split_pairs
from skinseg.shared.errors import InputError
from skinseg.shared.images import binarize, encode, read_mask

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
COLUMNS = ["model", "file", "status", *METRICS, "width", "height", "seconds", "error"]


@dataclass
class ModelResult:
    label: str
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[float, list[float]] = field(default_factory=lambda: {t: [] for t in THRESHOLDS})
    worst: list[tuple[float, Path, np.ndarray, np.ndarray]] = field(default_factory=list)  # small previews
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]


def model_labels(paths: list[Path]) -> list[str]:
    """Short unique names for the models (file stems, made unique with their folder when needed)."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


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
    for image_path, mask_path in pairs:
        row: dict[str, Any] = dict.fromkeys(COLUMNS, "") | {"model": label, "file": str(image_path)}
        try:
            truth = binarize(read_mask(mask_path))
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
        row.update(status="ok", width=truth.shape[1], height=truth.shape[0], seconds=round(pred.seconds, 3),
                   error="")
        res.rows.append(row)
        for t in THRESHOLDS:
            m = postprocess(pred.probability, replace(seg.post, threshold=t))
            res.sweep[t].append(scores(m, truth, with_hd95=False)["jaccard"])
        if worst_n:
            rgb = loaded.rgb
            res.worst.append((s["jaccard"], image_path, *_preview(rgb, truth, pred.mask)))
            res.worst.sort(key=lambda w: w[0])
            del res.worst[worst_n:]
        if save_masks is not None:
            files.write_bytes(save_masks / f"{image_path.stem}.png", encode(".png", pred.mask))
        if on_item:
            on_item()
    res.summary = aggregate(res.ok)
    sweep = {t: float(np.mean(v)) for t, v in res.sweep.items() if v}
    if sweep:
        best = max(sweep, key=lambda t: sweep[t])
        res.summary["threshold_sweep"] = sweep
        res.summary["best_threshold"] = {"threshold": best, "mean_jaccard": sweep[best],
                                         "current_threshold": seg.post.threshold}
    res.summary["errors"] = len(res.rows) - len(res.ok)
    return res


def write_reports(results: list[ModelResult], out: Path, meta: dict[str, Any]) -> None:
    """metrics.csv, summary.json, worst.png, jaccard_hist.png, threshold_sweep.png."""
    files.write_csv(out / "metrics.csv", COLUMNS, (row for r in results for row in r.rows))
    files.write_json(out / "summary.json", meta | {"models": {r.label: {"path": str(r.path), **r.summary}
                                                               for r in results}})
    for i, r in enumerate(results):
        if r.worst:
            name = "worst.png" if i == 0 else f"worst-{r.label.replace('/', '_')}.png"
            files.write_bytes(out / name, encode(".png", worst_gallery(r)))
    if any(r.ok for r in results):
        plots(results, out)


def worst_gallery(r: ModelResult) -> np.ndarray:
    from skinseg.shared.render import LESION, grid, overlay

    cells = [overlay(rgb, pred, LESION, alpha=0.0, truth=truth) for _, _, rgb, truth, pred in r.worst]
    labels = [f"{p.stem} J={j:.2f}" for j, p, *_ in r.worst]
    return grid(cells, labels, cols=4, cell=320)


def plots(results: list[ModelResult], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(0, 1, 41)
    for r in results:
        ax.hist([float(x["jaccard"]) for x in r.ok], bins=bins, alpha=0.55, label=r.label)
    ax.axvline(FAIL_BELOW, color="k", ls="--", lw=1, label=f"failure < {FAIL_BELOW}")
    ax.set_xlabel("Jaccard per image")
    ax.set_ylabel("images")
    ax.legend()
    _save(fig, out / "jaccard_hist.png")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        sw = r.summary.get("threshold_sweep", {})
        ax.plot(list(sw), list(sw.values()), marker="o", ms=3, label=r.label)
        if sw:
            b = r.summary["best_threshold"]
            ax.plot([b["threshold"]], [b["mean_jaccard"]], "k*", ms=10)
    ax.set_xlabel("threshold")
    ax.set_ylabel("mean Jaccard")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "threshold_sweep.png")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    files.write_bytes(path, buf.getvalue())


def pairs_for(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Pairs to score, and (file, reason) for every input that cannot be scored (reported, not fatal)."""
    p = split_pairs(images, masks)
    problems = [(str(i), "no matching mask") for i in p.images_without_mask]
    problems += [(str(m), "mask without an image") for m in p.masks_without_image]
    problems += [(k, "several masks for one image id") for k in p.duplicate_ids]
    return p.pairs, problems


METRIC_ROWS = (("jaccard", "mean Jaccard"), ("thresholded_jaccard", "thresholded Jaccard (ISIC 2018)"),
               ("dice", "Dice"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
               ("specificity", "specificity"), ("hd95", "HD95 px"), ("pooled_jaccard", "pooled Jaccard"),
               ("failure_rate", "failures (J < 0.65)"))


class EvalRun:
    """`skinseg eval`: every model over the same pairs through the engine infer uses, then reports."""

    def __init__(self, segs: list[Segmenter], output: Path, save_masks: bool = False, worst: int = 12) -> None:
        self.segs, self.out, self.save_masks, self.worst = segs, Path(output), save_masks, worst
        self.labels = model_labels([s.model_path for s in segs])

    def run(self, dirs: Any, pairs: list[tuple[Path, Path]], problems: list[tuple[str, str]],
            progress: Any = None) -> list[ModelResult]:
        files.ensure_writable_dir(self.out)
        results = []
        for seg, label in zip(self.segs, self.labels, strict=True):
            mask_dir = files.ensure_writable_dir(self.out / "masks" / label.replace("/", "_")) if self.save_masks \
                else None
            task = progress.add_task(f"eval {label}", total=len(pairs)) if progress else None
            advance = (lambda t=task: progress.advance(t)) if progress else None
            results.append(evaluate_model(seg, label, pairs, mask_dir, self.worst, advance))
        meta = {"images": str(dirs.images), "masks": str(dirs.masks), "pairs": len(pairs),
                "unscored_inputs": [{"file": f, "reason": r} for f, r in problems],
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "engine": {label: s.describe() for s, label in zip(self.segs, self.labels, strict=True)}}
        write_reports(results, self.out, meta)
        return results

    def table(self, results: list[ModelResult], title: str) -> None:
        def cell(r: ModelResult, key: str) -> str:
            v = r.summary.get(key)
            return f"{v['mean']:.4f}" if isinstance(v, dict) else ("" if v is None else f"{v:.4f}")

        rows = [[name, *[cell(r, key) for r in results]] for key, name in METRIC_ROWS]
        rows.append(["median Jaccard", *[f"{r.summary['jaccard']['median']:.4f}" if "jaccard" in r.summary else ""
                                         for r in results]])
        rows.append(["best threshold", *[
            f"{r.summary['best_threshold']['threshold']:.2f} ({r.summary['best_threshold']['mean_jaccard']:.4f})"
            if "best_threshold" in r.summary else "" for r in results]])
        rows.append(["scored / errors", *[f"{len(r.ok)} / {r.summary['errors']}" for r in results]])
        ui.table(title, ["metric", *self.labels], rows, right=tuple(range(1, len(results) + 1)))
        for label, seg in zip(self.labels, self.segs, strict=True):  # which file each column scored
            ui.out.print(f"{ui.escape(label)} = {ui.escape(str(seg.model_path))}", soft_wrap=True)

    @staticmethod
    def report_problems(results: list[ModelResult], problems: list[tuple[str, str]]) -> None:
        """Name on screen every input that was not scored (not only in metrics.csv)."""
        for f, why in problems:
            ui.warn(f"not scored: {files.shown(f)}: {why}")
        seen: set[str] = set()
        for r in results:
            for row in r.rows:
                if row["status"] != "ok" and row["file"] not in seen:
                    seen.add(row["file"])
                    ui.warn(f"not scored: {files.shown(row['file'])}: {row['error']}")
