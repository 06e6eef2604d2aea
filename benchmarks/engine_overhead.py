"""Engine overhead and memory on a large image (targets: engine <= 1.10x bare session.run, < 600 MB).

Usage:
    python benchmarks/engine_overhead.py [--model M.onnx] [--size 4288x2848] [--tile 512] [--repeat 3]

Without --model it exports an untrained DeepLabV3+ (MobileNetV2, separable decoder) with a fixed
512x512 uint8 input once (needs skinseg[train]); untrained weights cost the same time as trained ones.
Run it in a fresh process: peak RSS is that of the whole process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def bench_model(path: Path, tile: int) -> Path:
    if path.is_file():
        return path
    from skinseg.training.export import convert, min_ir_version  # noqa: F401
    from skinseg.training.model import build_model
    from skinseg.training.tf_env import import_tf

    import_tf()
    import onnx

    model = build_model((tile, tile), "mobilenetv2", "separable")
    onnx_model = convert(model, (tile, tile), 17)
    onnx_model.metadata_props.add(key="skinseg.format", value="1")
    onnx_model.metadata_props.add(key="skinseg.scale", value="native")
    onnx.save(onnx_model, str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--size", default="4288x2848")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model = args.model or bench_model(Path("benchmarks") / f"deeplab-mnv2-{args.tile}.onnx", args.tile)
    if args.model is None:
        # measure in a clean process without TensorFlow loaded
        import subprocess
        import sys

        cmd = [sys.executable, __file__, "--model", str(model), "--size", args.size, "--batch", str(args.batch),
               "--repeat", str(args.repeat)]
        raise SystemExit(subprocess.call(cmd))
    from skinseg.commands.bench import run_bench
    from skinseg.inference.segmenter import Segmenter

    w, h = (int(v) for v in args.size.split("x"))
    seg = Segmenter(model, "cpu", scale=None, batch=args.batch)
    res = run_bench(seg, None, (h, w), args.repeat)
    from skinseg.commands.doctor import cpu_features

    res["cpu"] = cpu_features()["model"]
    res["cores"] = cpu_features()["cores"]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
