"""A bounded load run against `skinseg serve` on 127.0.0.1 only: throughput, latency, 503s, memory.

Usage:
    python benchmarks/serve_load.py [--requests 2000] [--big-requests 600] [--concurrency 1 2 8 32]

Starts `skinseg serve --port 0` (shipped INT8 model, --workers 2 --threads 1) in a child process, then
for each image set (256x192 ISIC test images from tests/data; 3-12 MP: the full-resolution fixtures and
synthetic 4288x2848 JPEGs) and each concurrency sends a fixed number of requests from that many client
threads, each request bounded by a 60 s time-out. Prints images/s, p50/p95/p99 latency and the 503
count per run, the server's resident memory after warm-up and at the end, and the in-process
`Segmenter.predict` images/s on the same images for the 0.8x target. Then an overload run (--queue 2,
32 clients) shows 503s with a bounded p99 instead of time-outs. Name the CPU with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "skinseg", "serve", "--port", "0", "-q", *args],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline()
    while not proc.stdout.readline().startswith("ready:"):
        pass
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, first.split()[2]


def load(url: str, images: list[bytes], requests: int, clients: int) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        def client() -> None:
            for i in counter:
                t = time.perf_counter()
                try:
                    code = http.post(f"{url}/v1/segment", content=images[i % len(images)],
                                     headers={"Content-Type": "image/jpeg"}).status_code
                except httpx.HTTPError:
                    code = 0  # a time-out or a dropped connection
                with lock:
                    latencies.append(time.perf_counter() - t)
                    codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(clients):
                pool.submit(client)
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests": requests, "images_per_s": round(codes.get(200, 0) / wall, 1),
            "p50_ms": round(1000 * q[49], 1), "p95_ms": round(1000 * q[94], 1), "p99_ms": round(1000 * q[98], 1),
            "ok": codes.get(200, 0), "503": codes.get(503, 0),
            "failed": requests - codes.get(200, 0) - codes.get(503, 0)}


def in_process(paths: list[Path]) -> float:
    from skinseg import Segmenter

    seg = Segmenter("int8", "cpu")
    seg.predict(paths[0])
    t = time.perf_counter()
    for p in paths:
        seg.predict(p)
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--big-requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 8, 32])
    args = ap.parse_args()
    from skinseg.commands.doctor import cpu_features
    from skinseg.shared.images import encode
    from skinseg.shared.synthetic import synth_pair

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, avx512_vnni={cpu['avx512_vnni']}")
    data = ROOT / "tests" / "data" / "isic"
    small = sorted((data / "isic256" / "test" / "images").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        big = sorted((data / "fullres" / "images").glob("*.jpg"))
        for i in range(4):
            rgb, _ = synth_pair(2848, 4288, rng=20 + i)
            big.append(Path(tmp) / f"synthetic-{i}.jpg")
            big[-1].write_bytes(encode(".jpg", rgb, 92))
        proc, url = start("--model", "int8", "--workers", "2", "--threads", "1", "--queue", "64")
        try:
            print(json.dumps({"server_rss_mb_after_warmup": round(rss_mb(proc.pid), 1)}))
            for name, paths, count in (("256x192", small, args.requests), ("3-12 MP", big, args.big_requests)):
                blobs = [p.read_bytes() for p in paths]
                print(json.dumps({"images": name, "in_process_predict_images_per_s": round(in_process(paths), 1)}))
                for c in args.concurrency:
                    print(json.dumps({"images": name, **load(url, blobs, count, c),
                                      "server_rss_mb": round(rss_mb(proc.pid), 1)}), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        proc, url = start("--model", "int8", "--workers", "2", "--threads", "1", "--queue", "2")
        try:
            blobs = [p.read_bytes() for p in big]
            print(json.dumps({"images": "3-12 MP, overload (--queue 2)", **load(url, blobs, args.big_requests, 32)}))
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
