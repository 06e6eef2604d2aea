"""The whole recipe in one command: train -> export FP32 and INT8 -> eval on the test split.

    python scripts/recipe.py configs/isic2018-mnv2-256-recipe.ini               # a GPU machine (JAX)
    python scripts/recipe.py tiny.ini --epochs 2 --quiet                          # the CPU, tiny settings

Sized so the recipe config finishes in under 10 minutes on one H100/H200. It prints training images
per second (epochs after the first, which compiles) and how busy the GPU was: nvidia-smi's
utilisation sampled every 0.5 s while training (the share of time a kernel ran), when nvidia-smi
exists. Export needs TensorFlow (tf2onnx) or, on a machine without it, Keras' own ONNX export on the
PyTorch backend (the same verification, in a child process with KERAS_BACKEND=torch). INT8 comes
from `skinseg quantize` (no TensorFlow), and eval runs the exported models through the engine.
Writes recipe.json into the run folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


class GpuSampler:
    """nvidia-smi utilisation every 0.5 s in the background; nothing where there is no NVIDIA GPU."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def summary(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        busy = [s for s in self.samples if s > 0] or [0.0]
        return {"mean_utilisation_percent": round(statistics.mean(self.samples), 1),
                "median_utilisation_percent": round(statistics.median(self.samples), 1),
                "mean_while_busy_percent": round(statistics.mean(busy), 1), "samples": len(self.samples)}


def sh(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--epochs", type=int, help="override [train] epochs (tiny CPU runs)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--int8-max-drop", type=float, help="INT8 gate in Jaccard points (skinseg quantize --max-drop)")
    args = ap.parse_args()

    from skinseg.shared.config import load_config
    from skinseg.shared.runfolder import RunFolder
    from skinseg.training.trainer import Trainer

    cfg = load_config(args.config)
    t0 = time.perf_counter()
    with GpuSampler() as gpu:
        run_dir = Trainer(args.config, epochs=args.epochs, quiet=args.quiet).run()
    train_s = time.perf_counter() - t0
    run = RunFolder(run_dir)
    rows = run.read_history()
    rates = [float(r["images_per_s"]) for r in rows[1:]] or [float(r["images_per_s"]) for r in rows]

    t1 = time.perf_counter()
    skinseg = [sys.executable, "-m", "skinseg"]
    if importlib.util.find_spec("tensorflow") is not None and os.environ.get("KERAS_BACKEND", "tensorflow") != "torch":
        sh([*skinseg, "export", str(run_dir), "-q"])
    else:  # a GPU box without TensorFlow: Keras exports ONNX on the PyTorch backend
        sh([*skinseg, "export", str(run_dir), "-q"], env=dict(os.environ, KERAS_BACKEND="torch"))
    train_images = cfg.train.image_datapath
    models = [run.model]
    try:
        sh([*skinseg, "quantize", str(run.model), "--calibration", str(train_images), "-o", str(run.variant("int8")),
            *(["--images", str(cfg.eval.image_datapath)] if cfg.eval.image_datapath else []),
            *(["--max-drop", str(args.int8_max_drop), "--max-disagreement", str(args.int8_max_drop)]
              if args.int8_max_drop is not None else [])])
        models.append(run.variant("int8"))
    except subprocess.CalledProcessError:
        print("INT8 refused by its gate (see above): evaluating FP32 only", flush=True)
    export_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    report = run_dir / "eval"
    sh([*skinseg, "eval", str(args.config), *[a for m in models for a in ("--model", str(m))], "-o", str(report),
        "--exist-ok", "-q"])
    eval_s = time.perf_counter() - t2
    summary = json.loads((report / "summary.json").read_text())
    result = {
        "run": str(run_dir),
        "epochs": len(rows),
        "train_seconds": round(train_s, 1), "export_seconds": round(export_s, 1), "eval_seconds": round(eval_s, 1),
        "train_images_per_s": round(statistics.median(rates), 1),
        "gpu": gpu.summary(),
        "int8_kept": run.variant("int8") in models,
        "test": {label: {"mean_jaccard": m["jaccard"]["mean"], "thresholded_jaccard": m["thresholded_jaccard"]["mean"]}
                 for label, m in summary["models"].items()},
    }
    (run_dir / "recipe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
