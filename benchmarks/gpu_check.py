"""The CUDA path on a real GPU: parity with the CPU provider, IO binding, and speed.

Usage (on a machine with skinseg[gpu], CUDA 13 and cuDNN 9):
    python benchmarks/gpu_check.py [--images samples] [--big benchmarks/deeplab-mnv2-512.onnx]

Prints JSON: providers active, per-image probability max |diff| and mask Dice between CUDA and CPU
for the shipped FP32 model (with and without --tta), and `run_bench` figures on a 4288x2848 image
for the CPU and CUDA providers (shipped model; and the 512 px DeepLabV3+ when --big exists).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def parity(images: list[Path], tta: bool) -> list[dict[str, object]]:
    from skinseg.inference.segmenter import Segmenter

    cpu = Segmenter("fp32", "cpu", tta=tta)
    gpu = Segmenter("fp32", "cuda", tta=tta)
    rows = []
    for path in images:
        a, b = cpu.predict(path), gpu.predict(path)
        rows.append({"image": path.name, "size": f"{a.width}x{a.height}", "tta": tta,
                     "max_abs_diff": float(np.abs(a.probability - b.probability).max()),
                     "mask_dice": round(dice(a.mask, b.mask), 6), "io_binding": gpu.describe().get("io_binding")})
    return rows


def throughput(images: list[Path], provider: str, repeat: int = 5) -> dict[str, float]:
    from skinseg.inference.segmenter import Segmenter

    seg = Segmenter("fp32", provider)
    for p in images:  # warm-up
        seg.predict(p)
    t0 = time.perf_counter()
    for _ in range(repeat):
        for p in images:
            seg.predict(p)
    secs = time.perf_counter() - t0
    return {"provider": provider, "images_per_s": round(repeat * len(images) / secs, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=Path("samples"))
    ap.add_argument("--big", type=Path, default=Path("benchmarks/deeplab-mnv2-512.onnx"))
    args = ap.parse_args()
    import onnxruntime as ort

    from skinseg.commands.bench import run_bench
    from skinseg.inference.segmenter import Segmenter

    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out: dict[str, object] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                              "device": ort.get_device()}
    out["parity"] = parity(images, False) + parity(images, True)
    out["throughput_samples"] = [throughput(images, p) for p in ("cpu", "cuda")]
    benches = {}
    for provider in ("cuda", "cpu"):
        benches[f"shipped-{provider}"] = run_bench(Segmenter("fp32", provider), None, (2848, 4288), 3)
        if args.big.is_file():
            benches[f"big512-{provider}"] = run_bench(Segmenter(args.big, provider, scale=None), None,
                                                      (2848, 4288), 3)
    out["bench_4288x2848"] = benches
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
