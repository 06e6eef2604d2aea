"""A real `skinseg serve` process on 127.0.0.1 for tests: start it, read its address, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Server:
    """`skinseg serve ARGS --port 0` in a child process; the address it printed."""

    def __init__(self, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "skinseg", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "250", **(env or {})})
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited {self.proc.wait()}: {self.proc.stderr.read()}")
            self.lines.append(line)
            if line.startswith("ready:"):
                break
        self.url = self.lines[0].split()[2]
        self.port = int(self.url.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained
        self.err_lines: list[str] = []
        threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr), daemon=True).start()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


    def rss_mb(self, field: str = "VmRSS") -> float:
        """The server's resident memory now (VmRSS) or at its peak since the last reset (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} for the server")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS

    def log(self) -> str:
        time.sleep(0.2)
        return "".join(self.err_lines)
