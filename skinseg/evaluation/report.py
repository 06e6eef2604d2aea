"""eval's reports: metrics.csv, summary.json and the pictures (worst cases, Jaccard histogram, sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from skinseg.evaluation.scoring import COLUMNS, ModelResult
from skinseg.shared import files
from skinseg.shared.images import encode
from skinseg.shared.metrics import FAIL_BELOW
from skinseg.shared.render import save_figure


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
    from skinseg.shared.render import LESION, TRUTH, grid, overlay

    cells = [overlay(rgb, pred, LESION, alpha=0.0, truth=truth) for _, _, rgb, truth, pred in r.worst]
    labels = [f"{p.stem} J={j:.2f}" for j, p, *_ in r.worst]
    return grid(cells, labels, cols=4, cell=320,
                legend=[(TRUTH, "ground truth"), (LESION, "prediction"), (None, "J = Jaccard, worst first")])


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
    save_figure(fig, out / "jaccard_hist.png")
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
    save_figure(fig, out / "threshold_sweep.png")
