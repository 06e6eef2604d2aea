"""`skinseg eval`: every model over the same pairs through the engine infer uses, then the reports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.evaluation.report import review_rows, write_reports
from skinseg.evaluation.scoring import ModelResult, evaluate_model, model_labels
from skinseg.evaluation.splits import find_split, pairs_for
from skinseg.inference.options import EngineOptions
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import files
from skinseg.shared.errors import SkinsegError

METRIC_ROWS = (("jaccard", "mean Jaccard"), ("thresholded_jaccard", "thresholded Jaccard (ISIC 2018)"),
               ("dice", "Dice"), ("accuracy", "accuracy"), ("sensitivity", "sensitivity"),
               ("specificity", "specificity"), ("hd95", "HD95 px"), ("pooled_jaccard", "pooled Jaccard"),
               ("failure_rate", "failures (J < 0.65)"))


def tta_summary(used: bool, this: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Mean and thresholded Jaccard with flip TTA and without, whichever the run used (the model's
    `skinseg.tta`, or --tta / --no-tta)."""
    on, off = (this, other) if used else (other, this)
    pick = lambda s, k: s[k]["mean"] if isinstance(s.get(k), dict) else None  # noqa: E731
    return {"used": used, "mean_jaccard_with": pick(on, "jaccard"), "mean_jaccard_without": pick(off, "jaccard"),
            "thresholded_jaccard_with": pick(on, "thresholded_jaccard"),
            "thresholded_jaccard_without": pick(off, "thresholded_jaccard")}


class EvalRun:
    """`skinseg eval`: every model over the same pairs through the engine infer uses, then reports."""

    def __init__(self, segs: list[Segmenter], output: Path, save_masks: bool = False, worst: int = 12) -> None:
        self.segs, self.out, self.save_masks, self.worst = segs, Path(output), save_masks, worst
        self.labels = model_labels([s.model_path for s in segs])

    def run(self, dirs: Any, pairs: list[tuple[Path, Path]], problems: list[tuple[str, str]],
            progress: Any = None) -> list[ModelResult]:
        files.ensure_writable_dir(self.out)
        files.refuse_link(self.out / "masks")  # --save-masks writes below it
        results = []
        for seg, label in zip(self.segs, self.labels, strict=True):
            mask_dir = files.ensure_writable_dir(self.out / "masks" / label.replace("/", "_")) if self.save_masks \
                else None
            task = progress.add_task(f"eval {label}", total=len(pairs)) if progress else None
            advance = (lambda t=task: progress.advance(t)) if progress else None
            result = evaluate_model(seg, label, pairs, mask_dir, self.worst, advance)
            twin = Segmenter(seg.model_path, seg.providers[0], seg.options.with_(tta=not seg.tta))
            task = progress.add_task(f"eval {label}, TTA {'off' if seg.tta else 'on'}", total=len(pairs)) \
                if progress else None
            other = evaluate_model(twin, label, pairs, None, 0, (lambda t=task: progress.advance(t)) if progress
                                   else None).summary
            result.summary["tta"] = tta_summary(seg.tta, result.summary, other)
            results.append(result)
        meta = {"images": str(dirs.images), "masks": str(dirs.masks), "pairs": len(pairs),
                "unscored_inputs": [{"file": f, "reason": r} for f, r in problems],
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "masks_not_0_255": results[0].stored if results else {},
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
        for key, name in (("mean_jaccard_with", "mean Jaccard, flip TTA"),
                          ("mean_jaccard_without", "mean Jaccard, no TTA"),
                          ("thresholded_jaccard_with", "thresholded Jaccard, flip TTA"),
                          ("thresholded_jaccard_without", "thresholded Jaccard, no TTA")):
            with_tta = key.endswith("_with")
            rows.append([name, *[f"{r.summary['tta'][key]:.4f}" + (" *" if r.summary["tta"]["used"] == with_tta else "")
                                 if r.summary.get("tta", {}).get(key) is not None else "" for r in results]])
        rows += review_rows([r.summary.get("review") for r in results], "review: ")
        rows.append(["scored / errors", *[f"{len(r.ok)} / {r.summary['errors']}" for r in results]])
        ui.table(title, ["metric", *self.labels], rows, right=tuple(range(1, len(results) + 1)))
        ui.out.print("* the TTA setting this run used: the model's own (skinseg.tta) unless --tta / --no-tta")
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


def run_eval(config: Path | None, models: list[str] | None, images: Path | None, masks: Path | None,
             output: Path | None, provider: str, engine: EngineOptions, *, exist_ok: bool = False,
             save_masks: bool = False, worst: int = 12, quiet: bool = False) -> int:
    """The command: score every model on the split with the engine options infer takes; the exit code."""
    from skinseg.runner.models import choose_model, config_engine
    from skinseg.shared.runfolder import output_folder

    if worst < 0:
        raise SkinsegError(f"--worst {worst}: must be 0 (no gallery) or more")
    dirs = find_split(config, images, masks, "test")
    pairs, problems = pairs_for(dirs.images, dirs.masks)
    paths = [choose_model(m, None, provider) for m in models] if models else [choose_model(None, config, provider)]
    engine = config_engine(config, engine)  # the config's [mask], as infer --config applies it
    segs = [Segmenter(m, provider, engine) for m in paths]
    out = output_folder(output, "eval", exist_ok=exist_ok, inputs=[dirs.images, dirs.masks])
    run = EvalRun(segs, out, save_masks, worst)
    with ui.progress(disable=quiet) as bar:
        results = run.run(dirs, pairs, problems, bar)
    if not quiet:
        run.table(results, f"skinseg eval: {len(pairs)} pairs from {dirs.images}")
    run.report_problems(results, problems)
    for how, count in (results[0].stored if results else {}).items():  # said once, not once per mask
        ui.warn(f"{count} of {len(pairs)} masks read by the mask rule (docs/segment.md, Masks): {how}")
    # the last line says where the results are, also with -q
    ui.out.print(f"reports in {ui.escape(str(out))}: metrics.csv summary.json worst.png jaccard_hist.png "
                 "threshold_sweep.png risk_coverage.png", soft_wrap=True)
    return 1 if problems or any(r.summary["errors"] for r in results) else 0
