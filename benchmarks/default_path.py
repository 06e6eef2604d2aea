"""The default path: `skinseg infer` end to end against its irreducible work (reduced decode + model).

Usage:
    python benchmarks/default_path.py [--data DIR] [--synthetic N] [--threads 1 2] [--model int8]

Images: the full-resolution ISIC images in DIR (default: $SKINSEG_DATA/isic-fullres/images, else
../shared/data/isic-fullres/images when present) and N synthetic 4288x2848 JPEGs. For each thread
count it runs `skinseg infer` with default settings in a child process (outputs written; the run's own
seconds from run.json, so start-up and model loading are not counted), then, in this process and in
the same run, times reduced decode + model alone on the same images. Prints images/s, ms per image,
their ratio (target <= 1.5) and the child's peak memory. Name the CPU with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def images(args: argparse.Namespace, tmp: Path) -> list[Path]:
    from skinseg.shared.dataset import collect_images
    from skinseg.shared.images import encode
    from skinseg.shared.synthetic import synth_pair

    data = args.data or Path(os.environ.get("SKINSEG_DATA", ROOT.parent / "shared" / "data")) / "isic-fullres" \
        / "images"
    real = collect_images([str(data)])[0] if data.is_dir() else []
    found = []
    for k in range(args.copies):  # more images per run: steadier figures
        for p in real:
            found.append(tmp / f"{p.stem}-{k}{p.suffix}")
            found[-1].write_bytes(p.read_bytes())
    for i in range(args.synthetic):
        rgb, _ = synth_pair(2848, 4288, rng=i)
        path = tmp / f"synthetic-{i}.jpg"
        path.write_bytes(encode(".jpg", rgb, 95))
        found.append(path)
    return found


def decode_and_model(paths: list[Path], model: str, threads: int, tta: bool | None, repeat: int = 3) -> float:
    """Seconds per image of reduced decode + sliding-window model (the irreducible work), best of `repeat`."""
    from skinseg import Segmenter
    from skinseg.inference.tiling import sliding_window

    seg = Segmenter(model, "cpu", threads=threads, tta=tta)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for p in paths:
            work = seg.to_working(seg.load(p))
            sliding_window(work, seg.adapter, seg.tile, seg.overlap, seg.batch, seg.sigma_scale)
        best = min(best, (time.perf_counter() - t) / len(paths))
    return best


def infer_run(paths: list[Path], model: str, threads: int, out: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds per image of the run itself, peak RSS MB of the child, read from its VmHWM at exit)."""
    argv = ["skinseg", "infer", *map(str, paths), "--model", model, "--threads", str(threads), "-o", str(out), "-q",
            *extra]
    code = ("import atexit, sys; from skinseg.shared.system import peak_rss_mb; "
            "atexit.register(lambda: print('PEAK', peak_rss_mb(), file=sys.stderr)); "
            f"sys.argv = {argv!r}; from skinseg.cli import main; main()")
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak = float(res.stderr.split("PEAK")[-1].split()[0])
    seconds = json.loads((out / "run.json").read_text())["seconds"]
    return seconds / len(paths), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--synthetic", type=int, default=8)
    ap.add_argument("--copies", type=int, default=3, help="times each real image is in the run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="int8")
    ap.add_argument("--repeat", type=int, default=3, help="infer runs per thread count (median)")
    ap.add_argument("--tta", choices=("model", "on", "off"), default="model",
                    help="flip TTA for infer and the baseline alike (default: as the model records)")
    ap.add_argument("--infer-args", default="", help="more infer flags, e.g. --infer-args='--overlay-max 2048'")
    args = ap.parse_args()
    from skinseg.commands.doctor import cpu_features
    from skinseg.shared.images import probe_size

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, avx512_vnni={cpu['avx512_vnni']}; python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = images(args, Path(tmp))
        sizes = [probe_size(p.read_bytes()) for p in paths]
        mp = sum(w * h for w, h in sizes) / len(paths) / 1e6
        print(f"{len(paths)} images, {mp:.1f} MP on average; model {args.model}; TTA {args.tta}; infer flags: "
              f"{args.infer_args or '-'}")
        results = []
        for threads in args.threads:
            runs = []
            tta_flag = {"model": [], "on": ["--tta"], "off": ["--no-tta"]}[args.tta]
            for i in range(args.repeat):
                runs.append(infer_run(paths, args.model, threads, Path(tmp) / f"out-{threads}-{i}",
                                      tta_flag + args.infer_args.split()))
            per_image = sorted(r[0] for r in runs)[len(runs) // 2]
            base = decode_and_model(paths, args.model, threads, {"model": None, "on": True, "off": False}[args.tta])
            results.append({"threads": threads, "infer_images_per_s": round(1 / per_image, 2),
                            "infer_ms_per_image": round(1000 * per_image, 1),
                            "decode_plus_model_ms": round(1000 * base, 1), "ratio": round(per_image / base, 2),
                            "peak_rss_mb": round(max(r[1] for r in runs), 1)})
            print(json.dumps(results[-1]))


if __name__ == "__main__":
    main()
