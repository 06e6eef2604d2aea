"""Providers on the machine at hand: the CPU EP and the OpenVINO EP, FP32, INT8 and bf16.

Usage:
    .venv/bin/python benchmarks/providers.py --make     # once, with skinseg[train]: the seed-workload models
    .venv-ov/bin/python benchmarks/providers.py [--images DIR]   # with skinseg[openvino]

--make exports an untrained DeepLabV3+ with the seed's ResNet50 backbone and standard decoder at a fixed
512x512 uint8 input (untrained weights cost the same time as trained ones) to
benchmarks/seed-resnet50-512.onnx, and its INT8 version (skinseg's CPU quantization, calibrated on the
test fixtures; no gate: the model is untrained) to benchmarks/seed-resnet50-512-int8.onnx.

The timing run prints, for the seed-workload models and the shipped ones, `skinseg bench --compare`
(ms per tile under every CPU-side setting), then runs `skinseg infer` at native 512 px tiles on the
full-resolution images (default: ../shared/data/isic-fullres/images, else tests/data/isic/fullres) with
each provider: images/s from run.json (start-up and compile excluded, as the run measures itself), the
engine's time per tile against bare session.run (`skinseg bench`), and the masks of the OpenVINO EP
against the CPU EP's (Jaccard per image). Name the CPU with the figures (printed first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "benchmarks" / "seed-resnet50-512.onnx"
SEED_INT8 = ROOT / "benchmarks" / "seed-resnet50-512-int8.onnx"


def make() -> None:
    from skinseg.training.export import convert
    from skinseg.training.model import build_model
    from skinseg.training.tf_env import import_tf

    import_tf()
    import onnx

    model = build_model((512, 512), "resnet50", "standard")
    onnx_model = convert(model, (512, 512), 17)
    for key, value in (("skinseg.format", "2"), ("skinseg.scale", "native"), ("skinseg.precision", "fp32")):
        onnx_model.metadata_props.add(key=key, value=value)
    onnx.save(onnx_model, str(SEED))
    from skinseg.inference.adapter import ModelAdapter
    from skinseg.inference.int8 import calibration_tiles, quantize_file
    from skinseg.shared.dataset import collect_images

    images, _ = collect_images([str(ROOT / "tests" / "data" / "isic" / "isic256" / "train" / "images")])
    tiles = calibration_tiles(images[:16], None, (512, 512), 16)
    quantize_file(SEED, SEED_INT8, ModelAdapter(SEED, "cpu"), tiles)
    print(f"wrote {SEED} and {SEED_INT8}")


def skinseg(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "skinseg", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={**os.environ, "COLUMNS": "200"}).stdout


def infer_run(images: Path, model: str, provider: str, out: Path, extra: list[str]) -> dict:
    skinseg("infer", str(images), "--model", model, "--provider", provider, "-o", str(out), "-q", *extra)
    info = json.loads((out / "run.json").read_text())
    return {"model": Path(model).name, "provider": provider, "chosen": info["engine"]["providers"][0],
            "graph": info["engine"]["graph_opt"], "images": info["ok"],
            "images_per_s": round(info["ok"] / info["seconds"], 2)}


def agreement(a: Path, b: Path) -> tuple[float, float]:
    import numpy as np

    from skinseg.shared.images import binarize, read_mask
    from skinseg.shared.metrics import scores

    js = [scores(binarize(read_mask(m)), binarize(read_mask(a / "masks" / m.name)), with_hd95=False)["jaccard"]
          for m in sorted((b / "masks").glob("*.png"))]
    return round(min(js), 4), round(float(np.mean(js)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", action="store_true")
    ap.add_argument("--images", type=Path)
    ap.add_argument("--limit", type=int, default=9, help="full-size images for the seed-workload runs")
    args = ap.parse_args()
    if args.make:
        make()
        return
    from skinseg.commands.doctor import cpu_features

    cpu = cpu_features()
    feats = [f for f in ("avx2", "avx512_vnni", "amx_int8", "amx_bf16") if cpu.get(f)]
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, {' '.join(feats)}", flush=True)
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})", flush=True)
    for model in ([str(SEED), str(SEED_INT8)] if SEED_INT8.is_file() else []):
        print(skinseg("bench", "--compare", "--model", model, "--batch", "4", "--repeat", "5"), flush=True)
    print(skinseg("bench", "--compare", "--repeat", "10"), flush=True)
    shared = ROOT.parent / "shared" / "data" / "isic-fullres" / "images"
    images = args.images or (shared if shared.is_dir() else ROOT / "tests" / "data" / "isic" / "fullres" / "images")
    with tempfile.TemporaryDirectory() as tmp:
        few = Path(tmp) / "few"
        few.mkdir()
        for p in sorted(images.glob("*.jpg"))[: args.limit]:
            (few / p.name).symlink_to(p)
        runs = []
        if SEED_INT8.is_file():
            for provider in ("cpu", "openvino"):
                out = Path(tmp) / f"seed-{provider}"
                runs.append((out, infer_run(few, str(SEED_INT8), provider, out, ["--batch", "4"])))
            runs[-1][1]["jaccard_vs_cpu_min_mean"] = agreement(runs[0][0], runs[1][0])
            for provider in ("cpu", "openvino"):
                text = skinseg("bench", "--model", str(SEED_INT8), "--provider", provider, "--scale", "native",
                               "--image", str(sorted(few.iterdir())[0]), "--batch", "4", "--repeat", "3")
                line = next((ln for ln in text.splitlines() if "whole image / model alone" in ln), "")
                ratio = [cell.strip() for cell in line.split("│") if cell.strip()][-1] if line else "?"
                print(json.dumps({"model": SEED_INT8.name, "provider": provider, "engine_over_bare": ratio}))
        for provider in ("cpu", "openvino"):
            out = Path(tmp) / f"shipped-{provider}"
            runs.append((out, infer_run(images, "int8", provider, out, [])))
        runs[-1][1]["jaccard_vs_cpu_min_mean"] = agreement(runs[-2][0], runs[-1][0])
        for _, row in runs:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
