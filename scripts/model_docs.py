"""Regenerate the model card's pictures in docs/ from a training history and an eval report.

Usage:
    python scripts/model_docs.py --runs RUN [RUN ...] --eval EVAL_DIR [--model int8] [--out docs]

--runs: run folders whose history.csv files make one curve, in order (a run continued by a
fine-tune: give both); epochs are numbered on across them. --eval: a `skinseg eval` output folder.
Writes training-curves.png, threshold-sweep.png, jaccard-hist.png, worst-test.jpg and
samples-overlays.jpg (the shipped model on samples/, as `skinseg infer samples/` draws it).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2


def curves(runs: list[Path], out: Path) -> None:
    from skinseg.training.trainer import plot_curves

    rows: list[dict[str, str]] = []
    for run in runs:
        with open(run / "history.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append(r | {"epoch": str(len(rows) + 1)})
    plot_curves(rows, out)


def samples(model: str, out: Path) -> None:
    from skinseg.inference.segmenter import Segmenter
    from skinseg.shared import files
    from skinseg.shared.images import encode, read_image
    from skinseg.shared.render import grid, overlay

    seg = Segmenter(model, "cpu")
    cells, labels = [], []
    for path in sorted(Path("samples").glob("*.jpg")):
        pred = seg.predict(path)
        cells.append(overlay(read_image(path), pred.mask))
        labels.append(f"{path.stem} {pred.width}x{pred.height}")
    files.write_bytes(out, encode(".jpg", grid(cells, labels, cols=4, cell=320), 88))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, nargs="+", required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--model", default="int8", help="shipped model drawn on the samples: fp32 | int8 | PATH")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    args = ap.parse_args()
    from skinseg.shared import files
    from skinseg.shared.images import encode

    curves(args.runs, args.out / "training-curves.png")
    files.write_bytes(args.out / "threshold-sweep.png", (args.eval / "threshold_sweep.png").read_bytes())
    files.write_bytes(args.out / "jaccard-hist.png", (args.eval / "jaccard_hist.png").read_bytes())
    worst = cv2.cvtColor(cv2.imread(str(args.eval / "worst.png")), cv2.COLOR_BGR2RGB)
    files.write_bytes(args.out / "worst-test.jpg", encode(".jpg", worst, 85))
    samples(args.model, args.out / "samples-overlays.jpg")
    print(f"wrote {args.out}/: training-curves.png threshold-sweep.png jaccard-hist.png worst-test.jpg "
          "samples-overlays.jpg")


if __name__ == "__main__":
    main()
