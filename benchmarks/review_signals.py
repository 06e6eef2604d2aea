"""Which per-image signals rank failed masks (Jaccard < 0.65) first: groundwork for the review flag.

Usage:
    python benchmarks/review_signals.py [--data ../shared/data/isic2018-task1-256] [--model int8]

Then, for the engine's `confidence` (inference/review.py): the 15th percentile on validation (the
operating point) and the engine's default threshold, with the share flagged, the failures flagged
and the mean Jaccard of the unflagged images on each split.

For every image of the validation split (where a choice may be made) and the test split (where it is
then only reported), the shipped model runs as the engine runs it, and candidate signals are computed
from what the engine holds: the lesion probability at the working scale, the four flipped passes of
its TTA, the mask's shape. Prints, per split, the failure count and each candidate's AUROC for failures
(a higher score = more likely a right mask, so AUROC is P(score of a good mask > score of a failure)).
Name the CPU with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def auroc(scores: np.ndarray, failed: np.ndarray) -> float:
    """P(score of a good mask > score of a failed one), ties counted half (Mann-Whitney U)."""
    good, bad = scores[~failed], scores[failed]
    if not len(good) or not len(bad):
        return math.nan
    greater = (good[:, None] > bad[None, :]).sum() + 0.5 * (good[:, None] == bad[None, :]).sum()
    return float(greater / (len(good) * len(bad)))


def signals(seg, path: Path) -> tuple[dict[str, float], np.ndarray]:
    from skinseg.inference.tiling import sliding_window

    loaded = seg.load(path)
    work = seg.to_working(loaded)
    adapter = seg.adapter
    tta = adapter.tta
    adapter.tta = False
    passes = []
    for axes in ((), (0,), (1,), (0, 1)):
        img = np.ascontiguousarray(np.flip(work, axis=axes) if axes else work)
        p = sliding_window(img, adapter, seg.tile, seg.overlap, seg.batch, seg.sigma_scale)
        passes.append(np.flip(p, axis=axes) if axes else p)
    adapter.tta = tta
    prob = np.mean(passes, axis=0)
    mask = prob >= seg.post.threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = float(mask.mean())
    if n > 1:
        big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        lesion = labels == big
    else:
        lesion = mask
    inside = prob[lesion] if lesion.any() else np.array([0.0])
    ring = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~lesion
    outside = prob[ring] if ring.any() else np.array([0.0])
    uncertain = float(((prob > 0.2) & (prob < 0.8)).sum() / max(1, lesion.sum()))
    masks = [p >= seg.post.threshold for p in passes]
    union = np.logical_or.reduce(masks).sum()
    agreement = float(np.logical_and.reduce(masks).sum() / union) if union else 1.0
    contours, _ = cv2.findContours(lesion.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    compact = float(4 * math.pi * lesion.sum() / perimeter**2) if perimeter else 0.0
    h, w = mask.shape
    border = np.concatenate([lesion[0], lesion[-1], lesion[:, 0], lesion[:, -1]]).mean()
    out = {
        "mean prob inside": float(inside.mean()),
        "1 - mean prob in a 4 px ring outside": 1 - float(outside.mean()),
        "1 - uncertain band / lesion area": 1 - min(1.0, uncertain),
        "TTA agreement (IoU of the 4 passes)": agreement,
        "compactness (4 pi A / P^2)": compact,
        "1 - share of the frame edge touched": 1 - float(border),
        "1 - extra components' share": float(lesion.sum() / max(1, mask.sum())),
        "lesion share of the image": area,
    }
    out["combined: TTA agreement x inside x (1 - band)"] = (out["TTA agreement (IoU of the 4 passes)"]
                                                         * out["mean prob inside"]
                                                         * out["1 - uncertain band / lesion area"])
    return out, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "isic2018-task1-256")
    ap.add_argument("--model", default="int8")
    args = ap.parse_args()
    from skinseg import Segmenter
    from skinseg.commands.doctor import cpu_features
    from skinseg.shared.images import read_binary_mask
    from skinseg.shared.metrics import scores

    print(f"CPU: {cpu_features()['model']}; model {args.model}; failure: Jaccard < 0.65", flush=True)
    seg = Segmenter(args.model, "cpu")
    threshold = None
    for split in ("valid", "test"):
        rows = []
        for img in sorted((args.data / split / "images").glob("*.jpg")):
            truth, _ = read_binary_mask(args.data / split / "masks" / f"{img.stem}_segmentation.png")
            sig, _ = signals(seg, img)
            pred = seg.predict(img).mask
            rows.append((sig, scores(pred, truth, with_hd95=False)["jaccard"]))
        jac = np.array([j for _, j in rows])
        failed = jac < 0.65
        print(json.dumps({"split": split, "images": len(rows), "failures": int(failed.sum()),
                          "mean_jaccard": round(float(jac.mean()), 4)}), flush=True)
        for name in rows[0][0]:
            values = np.array([s[name] for s, _ in rows])
            print(json.dumps({"split": split, "signal": name, "auroc": round(auroc(values, failed), 3)}), flush=True)
        band = np.array([s["1 - uncertain band / lesion area"] for s, _ in rows])
        engine = np.array([seg.predict(img).confidence for img in sorted((args.data / split / "images").glob("*.jpg"))])
        if threshold is None:  # the operating point: flag at most 15 % of the validation images
            threshold = float(np.quantile(engine, 0.15))
        from skinseg.inference.review import DEFAULT_REVIEW_THRESHOLD

        cuts = (("15th percentile of validation", threshold), ("the engine's default", DEFAULT_REVIEW_THRESHOLD))
        for label, cut in cuts:
            flagged = engine < cut
            print(json.dumps({"split": split, "engine_confidence_auroc": round(auroc(engine, failed), 3),
                              "band_signal_auroc": round(auroc(band, failed), 3), "threshold": label,
                              "review_threshold": round(cut, 4), "flagged_share": round(float(flagged.mean()), 3),
                              "failures_caught": f"{int((flagged & failed).sum())} of {int(failed.sum())}",
                              "mean_jaccard_unflagged": round(float(jac[~flagged].mean()), 4)}), flush=True)


if __name__ == "__main__":
    main()
