"""`skinseg serve` under hostile traffic, on 127.0.0.1 only: memory, event-loop delay and refusals.

Usage:
    python benchmarks/serve_attacks.py [--cases bomb16 bomb8x2 parts uploads multipart46 loopback silent]

Each case starts its own `skinseg serve --port 0` (shipped INT8 model) in a child process and measures
the server from outside: peak resident memory (VmHWM, reset before each case through
/proc/PID/clear_refs), resident memory 3 s after the attack, the status codes the attack got, and the
worst `/healthz` delay seen while it ran (polled every 50 ms). Every loop is bounded in count and
time. Name the CPU with the figures (it is printed first).

- bomb16: one 16-bit PNG of zeros declaring 14000 x 14000 px (about 1 MB);
- bomb8x2: two 8-bit 14000 x 14000 PNGs at once, and a normal 256x192 image sent beside them;
- largest: two 16-bit PNGs at the default --max-pixels (40 MP) at once, one per engine thread;
- parts: a 2.2 MB multipart body of 40,000 empty parts;
- multipart46: a 46 MB image sent as multipart, then the same bytes raw (peak memory of each);
- uploads: --workers 1 --queue 2, 16 parallel 45 MB uploads;
- loopback: Host: evil.example, a cross-origin multipart POST, and whether /v1/model shows a path;
- silent: 20 connections that send nothing: how many the server closed within 40 s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from skinseg.shared.synthetic import zero_png

ROOT = Path(__file__).resolve().parents[1]
SMALL = sorted((ROOT / "tests" / "data" / "isic" / "isic256" / "test" / "images").glob("*.jpg"))[0]


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS


class Served:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "skinseg", "serve", "--port", "0", "-q", "--model",
                                      "int8", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        first = self.proc.stdout.readline()
        while not self.proc.stdout.readline().startswith("ready:"):
            pass
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.url = first.split()[2]
        self.port = int(self.url.rsplit(":", 1)[1])
        reset_peak(self.proc.pid)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=90)


class HealthWatch:
    """Polls /healthz every 50 ms in a thread; the worst answer time (a time-out counts as 10 s)."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.stop = url, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                t = time.perf_counter()
                try:
                    http.get(f"{self.url}/healthz")
                    took = time.perf_counter() - t
                except httpx.HTTPError:
                    took = 10.0
                self.worst = max(self.worst, took)
                time.sleep(0.05)

    def done(self) -> float:
        self.stop.set()
        self.thread.join(timeout=15)
        return round(self.worst, 2)


def noise_png(megabytes: float) -> bytes:
    import numpy as np

    from skinseg.shared.images import encode

    side = int((megabytes * 1e6 / 3) ** 0.5)
    return encode(".png", np.random.default_rng(0).integers(0, 256, (side, side, 3), np.uint8))


def post(url: str, body: bytes, ctype: str = "image/png", timeout: float = 120, raw_url: bool = False,
         **headers: str) -> int | str:
    try:
        return httpx.post(url if raw_url else f"{url}/v1/segment", content=body,
                          headers={"Content-Type": ctype, **headers}, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def after(s: Served) -> dict:
    time.sleep(3)
    return {"peak_mb": status_mb(s.proc.pid, "VmHWM"), "after_mb": status_mb(s.proc.pid, "VmRSS")}


def bomb16(cache: Path) -> dict:
    f = cache / "bomb16.png"
    if not f.exists():
        f.write_bytes(zero_png(14000, 14000, 16))
    with Served() as s:
        t = time.perf_counter()
        code = post(s.url, f.read_bytes())
        return {"case": "bomb16", "upload_mb": round(f.stat().st_size / 1e6, 2), "status": code,
                "seconds": round(time.perf_counter() - t, 2), **after(s)}


def bomb8x2(cache: Path) -> dict:
    f = cache / "bomb8.png"
    if not f.exists():
        f.write_bytes(zero_png(14000, 14000, 8))
    with Served() as s:
        with ThreadPoolExecutor(2) as pool:
            bombs = [pool.submit(post, s.url, f.read_bytes()) for _ in range(2)]
            time.sleep(0.3)
            t = time.perf_counter()
            normal = post(s.url, SMALL.read_bytes(), "image/jpeg")
            normal_s = time.perf_counter() - t
            codes = [b.result() for b in bombs]
        return {"case": "bomb8x2", "upload_mb": round(f.stat().st_size / 1e6, 2), "status": codes,
                "normal_request": normal, "normal_seconds": round(normal_s, 2), **after(s)}


def largest(cache: Path) -> dict:
    """Images at the default pixel limit (6324 x 6324, 40 MP), two at once (one per engine thread): a
    16-bit PNG of zeros (the largest decode) and a JPEG of a lesion enlarged to that size, with the
    overlay (the most post-processing and encoding): the most memory accepted images can take."""
    import cv2

    from skinseg.shared.images import encode, read_image

    png, jpg = cache / "largest16.png", cache / "largest-lesion.jpg"
    if not png.exists():
        png.write_bytes(zero_png(6324, 6324, 16))
    if not jpg.exists():
        jpg.write_bytes(encode(".jpg", cv2.resize(read_image(SMALL), (6324, 6324), interpolation=cv2.INTER_CUBIC)))
    out: dict = {"case": "largest", "pixels": 6324 * 6324}
    for label, f, query in (("png16", png, ""), ("lesion_jpeg_overlay", jpg, "?overlay=true")):
        with Served() as s:
            base = status_mb(s.proc.pid, "VmRSS")
            with ThreadPoolExecutor(2) as pool:
                url = f"{s.url}/v1/segment{query}"
                codes = list(pool.map(lambda _, f=f, url=url: post(url, f.read_bytes(), raw_url=True), range(2)))
            got = after(s)
            out[label] = {"status": codes, "base_mb": base, **got, "bytes_per_pixel_per_worker":
                          round((got["peak_mb"] - base) * 2**20 / 2 / (6324 * 6324), 1)}
    return out


def parts() -> dict:
    boundary = "b" * 20
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n" * 40_000
            + f"--{boundary}--\r\n").encode()
    with Served() as s:
        watch = HealthWatch(s.url)
        time.sleep(0.2)
        code = post(s.url, body, f"multipart/form-data; boundary={boundary}")
        time.sleep(0.3)
        return {"case": "parts", "body_mb": round(len(body) / 1e6, 2), "status": code,
                "worst_healthz_s": watch.done(), **after(s)}


def multipart46(cache: Path) -> dict:
    f = cache / "noise46.png"
    if not f.exists():
        f.write_bytes(noise_png(46))
    data = f.read_bytes()
    out = {"case": "multipart46", "upload_mb": round(len(data) / 1e6, 1)}
    for how in ("multipart", "raw"):
        with Served("--max-upload-mb", "60") as s:
            if how == "multipart":
                try:
                    code = httpx.post(f"{s.url}/v1/segment", files={"image": ("x.png", data, "image/png")},
                                      timeout=120).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
            else:
                code = post(s.url, data)
            out |= {f"{how}_status": code, f"{how}_peak_mb": status_mb(s.proc.pid, "VmHWM")}
    return out


def uploads(cache: Path) -> dict:
    f = cache / "noise45.png"
    if not f.exists():
        f.write_bytes(noise_png(45))
    data = f.read_bytes()
    with Served("--workers", "1", "--queue", "2") as s:
        barrier = threading.Barrier(16)

        def one(_: int) -> int | str:
            barrier.wait()
            return post(s.url, data, timeout=180)

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(16)))
        tally = {str(c): codes.count(c) for c in sorted(set(codes), key=str)}
        return {"case": "uploads", "upload_mb": round(len(data) / 1e6, 1), "parallel": 16, "status": tally,
                **after(s)}


def loopback() -> dict:
    with Served() as s:
        img = SMALL.read_bytes()
        host = post(s.url, img, "image/jpeg", Host="evil.example")
        try:
            cross = httpx.post(f"{s.url}/v1/segment", files={"image": ("x.jpg", img, "image/jpeg")},
                               headers={"Origin": "http://evil.example"}, timeout=60).status_code
        except httpx.HTTPError as exc:
            cross = type(exc).__name__
        model = httpx.get(f"{s.url}/v1/model", timeout=30).text
        return {"case": "loopback", "host_evil": host, "cross_origin_multipart": cross,
                "absolute_path_in_v1_model": str(ROOT) in model or '"/' in model}


def silent() -> dict:
    with Served() as s:
        socks = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(20)]
        closed, t0 = set(), time.monotonic()
        while time.monotonic() - t0 < 40 and len(closed) < 20:
            for i, sock in enumerate(socks):
                if i in closed:
                    continue
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) == b"":
                        closed.add(i)
                except TimeoutError:
                    pass
                except OSError:
                    closed.add(i)
            time.sleep(0.2)
        for sock in socks:
            sock.close()
        return {"case": "silent", "connections": 20, "closed_within_40s": len(closed),
                "seconds": round(time.monotonic() - t0, 1)}


CASES = {"bomb16": bomb16, "bomb8x2": bomb8x2, "largest": largest, "parts": parts, "multipart46": multipart46,
         "uploads": uploads, "loopback": loopback, "silent": silent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "skinseg-attacks",
                    help="where the generated attack files are kept between runs")
    args = ap.parse_args()
    from skinseg.commands.doctor import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores", flush=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in args.cases:
        fn = CASES[name]
        result = fn(args.cache) if fn.__code__.co_argcount else fn()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
