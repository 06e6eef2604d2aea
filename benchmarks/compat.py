"""Runtime x precision compatibility: does each runtime load the file, and does it give skinseg's answer?

    .venv-edge/bin/python benchmarks/compat.py --images tests/data/isic/isic256/test/images \
        --python /tmp/cv4/bin/python          # a Python with opencv-python-headless 4.x and openvino

For each model (FP32, INT8 for the CPU target, INT8 for the TensorRT target) the reference is ONNX
Runtime on real tiles at the working scale. Each runtime reports: loads, max |probability|
difference to ONNX Runtime, mask agreement (Jaccard of the tile masks at the model's threshold,
minimum over tiles) and median ms per tile. Runtimes: ONNX Runtime, OpenCV DNN (this Python's cv2,
classic and new engine when it has both, and the one of --python), OpenVINO (f32 inference hint),
the Node.js client (whole images, against `skinseg infer --exact-decode`). The TensorRT variant's
Q/DQ is also checked structurally (TensorRT needs int8 with zero point 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def measure(npz: str) -> list[dict]:
    """Run every runtime this Python has on the saved tiles (also called in a child Python)."""
    data = np.load(npz, allow_pickle=True)
    tiles, models = data["tiles"], [str(m) for m in data["models"]]
    refs, threshold, truth = data["refs"], float(data["threshold"]), data["truth"]
    rows = []

    def record(runtime: str, model: str, run) -> None:
        k = models.index(model)
        try:
            run(tiles[:1])
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot load or run the file is the finding
            rows.append({"runtime": runtime, "model": Path(model).name, "loads": False,
                         "error": str(exc).strip().splitlines()[0][:120]})
            return
        probs, times = [], []
        for t in tiles:
            t0 = time.perf_counter()
            probs.append(np.asarray(run(t[None])).reshape(t.shape[:2]))
            times.append(time.perf_counter() - t0)
        probs = np.stack(probs)
        ref = refs[k]
        jac = [_jaccard(p, r) for p, r in zip(probs >= threshold, ref >= threshold, strict=True)]
        gt = [_jaccard(p, t) for p, t in zip(probs >= threshold, truth, strict=True)]
        rows.append({"runtime": runtime, "model": Path(model).name, "loads": True,
                     "max_abs_diff": float(np.abs(probs - ref).max()), "min_mask_jaccard": float(min(jac)),
                     "mean_mask_jaccard": float(np.mean(jac)), "truth_jaccard": float(np.mean(gt)),
                     "ms_per_tile": 1000 * float(np.median(times))})

    try:
        import cv2

        engines = [("classic", getattr(cv2.dnn, "ENGINE_CLASSIC", None)), ("new", getattr(cv2.dnn, "ENGINE_NEW", None))]
        for label, engine in engines:
            if engine is None and label == "new":
                continue
            for m in models:
                def run(x, m=m, engine=engine):
                    if not hasattr(run, "net"):
                        run.net = cv2.dnn.readNetFromONNX(m) if engine is None else cv2.dnn.readNetFromONNX(m, engine)
                    run.net.setInput(x)
                    return run.net.forward()
                name = f"OpenCV DNN {cv2.__version__}" + (f" ({label} engine)" if engine is not None else "")
                record(name, m, run)
    except ImportError:
        pass
    try:
        import openvino as ov

        core = ov.Core()
        for m in models:
            compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            record(f"OpenVINO {ov.__version__.split('-')[0]} CPU (f32 hint)", m, lambda x, c=compiled: c(x)[0])
    except ImportError:
        pass
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=ROOT / "tests/data/isic/isic256/test/images")
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--python", action="append", default=[], help="another Python to measure its runtimes")
    ap.add_argument("--calibration", type=Path, default=ROOT / "tests/data/isic/isic256/train/images")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return

    import onnx

    from skinseg.inference.adapter import ModelAdapter
    from skinseg.inference.int8 import tensorrt_problems
    from skinseg.inference.model_files import FP32, INT8
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.images import binarize, load_image, read_mask
    from skinseg.shared.scale import mask_to_size, to_working

    tmp = Path(tempfile.mkdtemp(prefix="skinseg-compat-"))
    trt = tmp / "skinseg-int8-tensorrt.onnx"
    subprocess.run([sys.executable, "-m", "skinseg", "quantize", str(FP32), "--calibration", str(args.calibration),
                    "--target", "tensorrt", "-o", str(trt), "--force"], check=True, capture_output=True)
    models = [FP32, INT8, trt]
    images = sorted(args.images.glob("*.jpg"))[: args.count]
    ref_adapter = ModelAdapter(FP32, "cpu")
    scale = ref_adapter.spec.scale
    tiles, truth = [], []
    for p in images:
        img = load_image(p)
        work = to_working(img.rgb, (img.height, img.width), scale)
        mask = args.images.parent / "masks" / f"{p.stem}_segmentation.png"
        if work.shape[:2] == ref_adapter.tile and mask.is_file():
            tiles.append(work)
            truth.append(binarize(mask_to_size(read_mask(mask), work.shape[:2])))
    tiles, truth = np.stack(tiles), np.stack(truth)
    rows, refs = [], []
    for m in models:
        a = ModelAdapter(m, "cpu")
        refs.append(np.stack([a(t[None])[0] for t in tiles]))
        t0 = time.perf_counter()
        for t in tiles:
            a(t[None])
        rows.append({"runtime": "ONNX Runtime (reference)", "model": m.name, "loads": True, "max_abs_diff": 0.0,
                     "min_mask_jaccard": 1.0, "mean_mask_jaccard": 1.0,
                     "truth_jaccard": float(np.mean([_jaccard(r >= a.spec.threshold, t)
                                                     for r, t in zip(refs[-1], truth, strict=True)])),
                     "ms_per_tile": 1000 * (time.perf_counter() - t0) / len(tiles)})
    npz = tmp / "tiles.npz"
    np.savez(npz, tiles=tiles, refs=np.stack(refs), models=np.array([str(m) for m in models]),
             threshold=ref_adapter.spec.threshold, truth=truth)
    rows += measure(str(npz))
    for py in args.python:
        out = subprocess.run([py, __file__, "--child", str(npz)], capture_output=True, text=True, check=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    rows += node_client(models[:2], collect_images([args.images])[0][: args.count], tmp)
    rows += ort_format(models[:2], tiles, refs[:2], truth, ref_adapter.spec.threshold, tmp)
    print(f"TensorRT Q/DQ check of {trt.name}: {len(tensorrt_problems(onnx.load(str(trt))))} problems; "
          f"of {INT8.name}: {len(tensorrt_problems(onnx.load(str(INT8))))}")
    print(f"{len(tiles)} real tiles of {tiles.shape[1]}x{tiles.shape[2]} with expert masks\n")
    fp32_truth = rows[0]["truth_jaccard"]
    print("| runtime | model | loads | max abs prob diff vs ORT | mask agreement with ORT (Jaccard min / mean) | "
          "Jaccard vs truth (points vs ORT FP32) | ms per tile |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["loads"]:
            print(f"| {r['runtime']} | {r['model']} | no: {r['error']} | | | | |")
            continue
        diff = "" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.2g}"
        tj = r.get("truth_jaccard")
        truth_cell = "" if tj is None else f"{tj:.4f} ({(tj - fp32_truth) * 100:+.2f})"
        print(f"| {r['runtime']} | {r['model']} | yes | {diff} | {r['min_mask_jaccard']:.4f} / "
              f"{r['mean_mask_jaccard']:.4f} | {truth_cell} | {r['ms_per_tile']:.1f} |")


def ort_format(models: list[Path], tiles: np.ndarray, refs: list[np.ndarray], truth: np.ndarray, threshold: float,
               tmp: Path) -> list[dict]:
    """`skinseg convert --to ort` of each model (batch 1, fixed shapes, optimised for ARM) run by ONNX
    Runtime on the same tiles; prints the mobile usability checker's partitions for each file."""
    from skinseg.inference.adapter import ModelAdapter
    from skinseg.inference.convert import to_ort

    rows = []
    for m, ref in zip(models, refs, strict=True):
        res = to_ort(m, tmp / f"{m.stem}.ort")
        for ep, info in res.mobile.items():
            print(f"{m.stem}.ort {ep}: {info['supported']}/{info['nodes']} nodes in {info['partitions']} partitions, "
                  f"{info['verdict']} (as the .onnx is: {res.mobile_source[ep]['verdict']})")
        a = ModelAdapter(res.files[0], "cpu")
        probs, times = [], []
        for t in tiles:
            t0 = time.perf_counter()
            probs.append(a(t[None])[0])
            times.append(time.perf_counter() - t0)
        probs = np.stack(probs)
        jac = [_jaccard(p, r) for p, r in zip(probs >= threshold, ref >= threshold, strict=True)]
        gt = [_jaccard(p, t) for p, t in zip(probs >= threshold, truth, strict=True)]
        rows.append({"runtime": "ONNX Runtime, ORT format (skinseg convert --to ort)", "model": m.name, "loads": True,
                     "max_abs_diff": float(np.abs(probs - ref).max()), "min_mask_jaccard": float(min(jac)),
                     "mean_mask_jaccard": float(np.mean(jac)), "truth_jaccard": float(np.mean(gt)),
                     "ms_per_tile": 1000 * float(np.median(times))})
    return rows


def node_client(models: list[Path], images: list[Path], tmp: Path) -> list[dict]:
    """The Node.js client on whole images against `skinseg infer --exact-decode` (mask Jaccard)."""
    from skinseg.shared.images import binarize, read_mask

    rows = []
    for m in models:
        js, py = tmp / f"js-{m.stem}", tmp / f"py-{m.stem}"
        t0 = time.perf_counter()
        subprocess.run(["node", str(ROOT / "clients/js/segment.js"), "--model", str(m), "--output", str(js),
                        *map(str, images)], check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "skinseg", "infer", *map(str, images), "--model", str(m), "-o", str(py),
                        "--exact-decode", "-q"], check=True, capture_output=True)
        jac = []
        for p in images:
            a, b = binarize(read_mask(js / f"{p.stem}.png")), binarize(read_mask(py / "masks" / f"{p.stem}.png"))
            union = (a | b).sum()
            jac.append((a & b).sum() / union if union else 1.0)
        rows.append({"runtime": "Node.js client (onnxruntime-node), whole images", "model": m.name, "loads": True,
                     "max_abs_diff": None, "min_mask_jaccard": float(min(jac)),
                     "mean_mask_jaccard": float(np.mean(jac)), "ms_per_tile": 1000 * seconds / len(images)})
    return rows


if __name__ == "__main__":
    main()
