"""Soak test: `skinseg infer` over many images with memory sampled along the way.

Usage:
    python benchmarks/soak.py [--images 2000] [--distinct 24] [--model M] [--workdir /tmp/skinseg-soak]

Draws `--distinct` synthetic dermoscopy JPEGs of mixed sizes (up to 6000x4000) once, links them under
`--images` names, runs `skinseg infer` in a subprocess and samples its RSS every 0.5 s. Prints peak
RSS and throughput per tenth of the run: flat numbers mean no growth with the number of images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZES = [(4000, 6000), (2848, 4288), (1944, 2592), (1129, 1504), (767, 1022), (540, 720)]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--distinct", type=int, default=24)
    ap.add_argument("--model", default=None)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/skinseg-soak"))
    args = ap.parse_args()
    from skinseg.shared import files
    from skinseg.shared.images import encode
    from skinseg.shared.synthetic import synth_pair

    src = args.workdir / "distinct"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(args.distinct):
        p = src / f"d{i:03d}.jpg"
        if not p.exists():
            h, w = SIZES[i % len(SIZES)]
            files.write_bytes(p, encode(".jpg", synth_pair(h, w, rng=i)[0], 90))
    inputs = args.workdir / "inputs"
    inputs.mkdir(exist_ok=True)
    for i in range(args.images):
        link = inputs / f"img{i:05d}.jpg"
        if not link.exists():
            os.link(src / f"d{i % args.distinct:03d}.jpg", link)
    out = args.workdir / "out"
    shutil.rmtree(out, ignore_errors=True)  # progress is counted from the masks written: start empty
    cmd = [sys.executable, "-m", "skinseg", "infer", str(inputs), "-o", str(out), "-q"]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    samples = []
    while proc.poll() is None:
        done = len(list((out / "masks").glob("*.png"))) if (out / "masks").is_dir() else 0
        samples.append((time.time() - t0, rss_mb(proc.pid), done))
        time.sleep(0.5)
    total = time.time() - t0
    tenths = []
    for k in range(10):
        lo, hi = total * k / 10, total * (k + 1) / 10
        part = [s for s in samples if lo <= s[0] < hi]
        if len(part) >= 2:
            tenths.append({"tenth": k + 1, "peak_rss_mb": round(max(s[1] for s in part), 1),
                           "images_per_s": round((part[-1][2] - part[0][2]) / (part[-1][0] - part[0][0]), 2)})
    print(json.dumps({"images": args.images, "exit": proc.returncode, "seconds": round(total, 1),
                      "images_per_s": round(args.images / total, 2),
                      "peak_rss_mb": round(max(s[1] for s in samples), 1), "per_tenth": tenths}, indent=2))


if __name__ == "__main__":
    main()
