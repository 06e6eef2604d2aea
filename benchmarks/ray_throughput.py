"""Images per second: local `skinseg infer` against `--ray local --workers 1|2`, and the driver's peak memory.

    .venv-edge/bin/python benchmarks/ray_throughput.py --images ../shared/data/isic2018-task1-256/test/images \
        --fullres ../shared/data/isic-fullres/images

Each configuration runs `skinseg infer` in a fresh process (Ray start-up included, as a user sees it)
with the shipped INT8 model; peak memory is the driver process's VmHWM (workers are separate
processes). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVER = """
import runpy, sys
sys.argv = ["skinseg"] + sys.argv[1:]
try:
    runpy.run_module("skinseg", run_name="__main__")
finally:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_MB", int(line.split()[1]) / 1024, file=sys.stderr)
"""


def run(images: Path, extra: list[str]) -> tuple[float, float, int]:
    out = Path(tempfile.mkdtemp(prefix="skinseg-bench-")) / "out"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", DRIVER, "infer", str(images), "-o", str(out), "-q", "--model", "int8",
                          *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = next(float(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PEAK_MB"))
    n = len(list((out / "masks").glob("*.png")))
    shutil.rmtree(out.parent, ignore_errors=True)
    return seconds, peak, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="a folder of 256x192 images")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--fullres", type=Path, help="a folder of full-resolution images")
    args = ap.parse_args()
    sets = []
    tmp = Path(tempfile.mkdtemp(prefix="skinseg-bench-in-"))
    small = tmp / "small"
    small.mkdir()
    for p in sorted(args.images.glob("*.jpg"))[: args.count]:
        shutil.copy(p, small / p.name)
    sets.append((f"{len(list(small.iterdir()))} images 256x192", small))
    if args.fullres:
        sets.append((f"{len(list(args.fullres.glob('*.jpg')))} full-resolution images", args.fullres))
    print("| images | run | seconds | images/s | driver peak MB |\n|---|---|---|---|---|")
    for label, folder in sets:
        for name, extra in (("local", []), ("--ray local --workers 1", ["--ray", "local", "--workers", "1"]),
                            ("--ray local --workers 2", ["--ray", "local", "--workers", "2"])):
            seconds, peak, n = run(folder, extra)
            print(f"| {label} | {name} | {seconds:.1f} | {n / seconds:.2f} | {peak:.0f} |", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
