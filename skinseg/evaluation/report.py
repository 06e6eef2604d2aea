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
    """metrics.csv, summary.json, worst.png, jaccard_hist.png, threshold_sweep.png, risk_coverage.png."""
    files.write_csv(out / "metrics.csv", COLUMNS, (row for r in results for row in r.rows))
    files.write_json(out / "summary.json", meta | {"models": {r.label: {"path": str(r.path), **r.summary}
                                                               for r in results}})
    for i, r in enumerate(results):
        if r.worst:
            name = "worst.png" if i == 0 else f"worst-{r.label.replace('/', '_')}.png"
            files.write_bytes(out / name, encode(".png", worst_gallery(r)))
    if any(r.ok for r in results):
        plots(results, out)


def review_rows(columns: list[dict[str, Any] | None], prefix: str = "") -> list[list[str]]:
    """Table rows of the review flag's figures (inference/review.py, `review_figures`), one column per
    figures dict (None: an empty cell): eval prints one per model, review-threshold now and chosen."""
    pct = lambda v: "" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    num = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    shows = (("AUROC of confidence for failures", lambda f: num(f["auroc_failures"])),
             ("threshold", lambda f: f"{f['threshold']:.4f}"),
             ("images flagged", lambda f: f"{f['flagged']} of {f['images']} ({pct(f['flagged_share'])})"),
             ("failures (Jaccard < 0.65) flagged", lambda f: f"{f['failures_caught']} of {f['failures']}"),
             ("mean Jaccard, all images", lambda f: num(f["mean_jaccard_all"])),
             ("mean Jaccard, images not flagged", lambda f: num(f["mean_jaccard_unflagged"])))
    return [[prefix + name, *[show(c) if c else "" for c in columns]] for name, show in shows]


def worst_gallery(r: ModelResult) -> np.ndarray:
    from skinseg.shared.render import LESION, TRUTH, grid, overlay

    cells = [overlay(rgb, pred, LESION, alpha=0.0, truth=truth) for _, _, rgb, truth, pred, _ in r.worst]
    labels = [f"{p.stem} J={j:.2f}" + (" REVIEW" if flagged else "") for j, p, *_, flagged in r.worst]
    return grid(cells, labels, cols=4, cell=320,
                legend=[(TRUTH, "ground truth"), (LESION, "prediction"),
                        (None, "J = Jaccard, worst first; REVIEW = flagged for a person to check")])


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
    risk_coverage(results, out / "risk_coverage.png")


def risk_coverage(results: list[ModelResult], path: Path) -> None:
    """Mean Jaccard of the images kept as the least confident are set aside for review (0-50 %), with
    each model's operating point: what the review flag buys."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, r in enumerate(results):
        rv = r.summary.get("review")
        if not rv:
            continue
        curve = [c for c in rv["risk_coverage"] if c["mean_jaccard_kept"] is not None]
        line, = ax.plot([100 * c["flagged_share"] for c in curve], [c["mean_jaccard_kept"] for c in curve],
                        marker="o", ms=3, label=f"{r.label} (AUROC {rv['auroc_failures']:.3f})"
                        if rv["auroc_failures"] is not None else r.label)
        if rv["mean_jaccard_unflagged"] is not None:
            ax.plot([100 * rv["flagged_share"]], [rv["mean_jaccard_unflagged"]], "*", ms=12, color=line.get_color())
            if i == 0:  # one label: the others' stars sit close by and their text would overprint it
                said = f"threshold {rv['threshold']:.2f}: {rv['failures_caught']}/{rv['failures']} failures flagged"
                ax.annotate(said,
                            (100 * rv["flagged_share"], rv["mean_jaccard_unflagged"]), textcoords="offset points",
                            xytext=(8, -14), fontsize=8)
    ax.set_xlabel("images flagged for review, least confident first (%)")
    ax.set_ylabel("mean Jaccard of the images not flagged")
    ax.set_title("Risk-coverage: what the review flag buys", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
