"""`skinseg review-threshold`: decide a model's review threshold on images with masks (a clinic's own
validation set, or a model trained elsewhere) and write it into a copy of the model file.

The threshold flags at most --max-flagged of these images, the least confident first; export makes the
same choice on its validation split (inference/review.py, `choose_threshold`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skinseg import ui
from skinseg.evaluation.report import review_rows
from skinseg.evaluation.scoring import evaluate_model
from skinseg.evaluation.splits import find_split, pairs_for
from skinseg.inference.options import EngineOptions
from skinseg.inference.review import choose_threshold, review_figures
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import files
from skinseg.shared.errors import SkinsegError
from skinseg.shared.metadata import FORMAT_VERSION, PREFIX


def write_threshold(source: Path, output: Path, threshold: float, figures: dict[str, Any]) -> None:
    """A copy of `source` whose metadata records `threshold` (and how it was chosen); weights unchanged.
    A skinseg file moves to the current format (its other keys mean what they meant)."""
    import json

    import onnx

    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    props[PREFIX + "review_threshold"] = f"{threshold:g}"
    props[PREFIX + "review"] = json.dumps({k: v for k, v in figures.items() if k != "risk_coverage"})
    if PREFIX + "format" in props:
        props[PREFIX + "format"] = FORMAT_VERSION
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    files.write_bytes(output, model.SerializeToString())


def run_review_threshold(model: Path | None, config: Path | None, images: Path | None, masks: Path | None,
                         max_flagged: float, output: Path | None, provider: str, engine: EngineOptions,
                         quiet: bool = False) -> int:
    """The command; its exit code (1 when some pairs could not be scored)."""
    from skinseg.runner.models import choose_model, config_engine

    if not 0 <= max_flagged <= 1:
        raise SkinsegError(f"--max-flagged {max_flagged}: must be a share from 0 to 1 (0.15 = 15 % of images)")
    dirs = find_split(config, images, masks, "eval")
    pairs, problems = pairs_for(dirs.images, dirs.masks)
    path = choose_model(model, config, provider)
    seg = Segmenter(path, provider, config_engine(config, engine))
    if output is not None:
        output = Path(output)
        if output.suffix.lower() != ".onnx":
            raise SkinsegError(f"--output {output}: expected an .onnx file name")
        if output.resolve() == seg.model_path.resolve():
            raise SkinsegError(f"--output {output} is the model itself; write a copy (its sha256 names the model "
                               "in every run it made)")
        files.ensure_writable_dir(output.parent)
        files.refuse_link(output)
    with ui.progress(disable=quiet) as bar:
        task = bar.add_task("review threshold", total=len(pairs)) if bar else None
        result = evaluate_model(seg, "model", pairs, None, 0, (lambda: bar.advance(task)) if bar else None)
    ok = result.ok
    if not ok:
        raise SkinsegError(f"no pair in {dirs.images} could be scored; see the errors above")
    confidences, jaccards = [r["confidence"] for r in ok], [r["jaccard"] for r in ok]
    threshold = choose_threshold(confidences, max_flagged)
    now, chosen = result.summary["review"], review_figures(confidences, jaccards, threshold)
    rows = review_rows([now, chosen])
    ui.table(f"review threshold for {seg.model_path.name} on {len(ok)} images from {dirs.images}",
             ["", "model's now", f"flag at most {100 * max_flagged:.0f} %"], rows, right=(1, 2))
    for f, why in problems + [(r["file"], r["error"]) for r in result.rows if r["status"] != "ok"]:
        ui.warn(f"not scored: {files.shown(f)}: {why}")
    if output is None:
        ui.out.print(f"not written (no --output): run with --review-threshold {threshold:g}, or give -o NEW.onnx "
                     "for a copy of the model that records it", soft_wrap=True)
    else:
        split = f"{Path(dirs.images).parent.name}/{Path(dirs.images).name}"  # a folder's name, never a full path
        write_threshold(seg.model_path, output, threshold, chosen | {"max_flagged": max_flagged, "split": split})
        ui.out.print(f"wrote {ui.escape(str(output))}: review threshold {threshold:g}", soft_wrap=True)
    return 1 if problems or len(ok) < len(result.rows) else 0
