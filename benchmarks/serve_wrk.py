"""`skinseg serve` under wrk, a load generator that never backs off, on 127.0.0.1 only.

Usage:
    python benchmarks/serve_wrk.py [--seconds 15] [--connections 2 8 32 128]

Needs Debian's wrk (`apt-get install wrk`). Starts `skinseg serve --port 0 -q` (shipped INT8 model,
--workers 2 --threads 1) and runs wrk for a fixed time per connection count, every connection posting
the same 256x192 ISIC test image back to back whatever the answer, then one 3-12 MP run and an overload
run with --queue 2 and 128 connections. Prints requests/s, 2xx/s, non-2xx answers (503s from the
queue), socket errors, wrk's latency percentiles and the server's resident memory (now and peak).
Name the CPU with the figures (printed first).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_attacks import Served, status_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LUA = """
local f = io.open("{path}", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
done = function(summary, latency, requests)
  io.write(string.format("JSON {{\\"p50_ms\\": %.1f, \\"p90_ms\\": %.1f, \\"p99_ms\\": %.1f, \\"requests\\": %d, "
    .. "\\"non2xx_and_errors\\": %d}}\\n", latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.requests, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(url: str, image: Path, connections: int, seconds: int, tmp: Path) -> dict:
    script = tmp / f"post-{image.stem}.lua"
    script.write_text(LUA.format(path=image))
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
                          "-s", str(script), f"{url}/v1/segment"], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = int(non2xx.group(1)) if non2xx else 0
    return {"connections": connections, "seconds": seconds, "requests_per_s": rps,
            "ok_per_s": round(rps * (1 - bad / max(figures["requests"], 1)), 1), "non_2xx": bad,
            "socket_errors": sockets.group(1) if sockets else "none", **{k: figures[k] for k in
                                                                        ("p50_ms", "p90_ms", "p99_ms")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, nargs="+", default=[2, 8, 32, 128])
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    from skinseg.commands.doctor import cpu_features
    from skinseg.shared.images import encode
    from skinseg.shared.synthetic import synth_pair

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; client: wrk -t 2 (same machine)", flush=True)
    small = sorted((ROOT / "tests" / "data" / "isic" / "isic256" / "test" / "images").glob("*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        big = tmp / "synthetic-4288x2848.jpg"
        big.write_bytes(encode(".jpg", synth_pair(2848, 4288, rng=20)[0], 92))
        runs = [("256x192", small, "16", c) for c in args.connections]
        runs += [("4288x2848", big, "16", 8), ("256x192, --queue 2 (overload)", small, "2", 128)]
        for label, image, queue, connections in runs:
            with Served("--workers", "2", "--threads", "1", "--queue", queue) as s:
                result = wrk(s.url, image, connections, args.seconds, tmp)
                print(json.dumps({"images": label, "queue": int(queue), **result,
                                  "server_rss_mb": status_mb(s.proc.pid, "VmRSS"),
                                  "server_peak_mb": status_mb(s.proc.pid, "VmHWM")}), flush=True)


if __name__ == "__main__":
    main()
