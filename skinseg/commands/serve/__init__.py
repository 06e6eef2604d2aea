"""`skinseg serve`: the engine as an HTTP service and a web page (FastAPI + uvicorn, the [serve] extra).

Everything a user can get wrong (flags, the model, the address, the key) is checked and reported in
one line with exit code 2 before anything listens; SIGTERM or Ctrl-C stops accepting, finishes the
requests in flight and exits 0.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from skinseg import ui
from skinseg.inference.options import EngineOptions
from skinseg.shared.errors import SkinsegError
from skinseg.shared.install import install_hint

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _modules() -> tuple:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise SkinsegError(f"skinseg serve needs the serve extra ({exc.name} is missing): "
                           f"{install_hint('cpu,serve')}") from None
    from skinseg.commands.serve import app

    return uvicorn, app


def api_key(key_file: Path | None, host: str, insecure: bool) -> str | None:
    """The key clients must send: from --api-key-file or SKINSEG_API_KEY; required off loopback."""
    key = None
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SkinsegError(f"--api-key-file {key_file}: cannot read it ({exc})") from None
        if not key:
            raise SkinsegError(f"--api-key-file {key_file}: the file is empty; put the key on its first line")
    elif os.environ.get("SKINSEG_API_KEY", "").strip():
        key = os.environ["SKINSEG_API_KEY"].strip()
    if key is not None and len(key) < 16:
        raise SkinsegError("the API key is shorter than 16 characters; use a long random one "
                           "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if key is None and host not in LOOPBACK and not insecure:
        raise SkinsegError(f"--host {host} makes the service reachable from other machines: set an API key "
                           "(SKINSEG_API_KEY or --api-key-file), or pass --insecure-no-auth to serve without one")
    return key


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, opened here so a taken port is one clear line before anything starts."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on each connection (with proto 0 it does not, and
    # every answer waited 40 ms for the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "the port is in use (another server?)" if exc.errno == 98 else (exc.strerror or str(exc))
        raise SkinsegError(f"cannot listen on {host}:{port}: {why}; choose another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_serve(model: Path | None, provider: str, engine: EngineOptions, *, host: str = "127.0.0.1",
              port: int = 8000, workers: int = 2, queue: int = 16, max_upload_mb: float = 50.0,
              api_key_file: Path | None = None, insecure_no_auth: bool = False, cors: list[str] | None = None,
              save: Path | None = None, overlay_max: int | None = None, quiet: bool = False) -> int:
    """Check everything, load and warm the model, then serve until SIGTERM / Ctrl-C (exit code 0)."""
    import math

    uvicorn, app = _modules()
    from skinseg.inference.model_files import choose_model
    from skinseg.inference.segmenter import Segmenter

    if not 1 <= workers <= 64:
        raise SkinsegError(f"--workers {workers}: must be 1 to 64 engine threads")
    if not 0 <= queue <= 10_000:
        raise SkinsegError(f"--queue {queue}: must be 0 to 10000 waiting requests")
    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= 1024):
        raise SkinsegError(f"--max-upload-mb {max_upload_mb}: must be above 0 and at most 1024")
    if not 0 <= port <= 65535:
        raise SkinsegError(f"--port {port}: must be 0 to 65535 (0 = any free port)")
    if overlay_max is not None and overlay_max < 0:
        raise SkinsegError(f"--overlay-max {overlay_max}: must be 0 (full size) or a long side in px")
    key = api_key(api_key_file, host, insecure_no_auth)
    if save is not None:
        from skinseg.shared import files

        if save.exists() and not save.is_dir():
            raise SkinsegError(f"--save {save} is a file; give a folder for the uploads")
        files.ensure_writable_dir(save)
    sock = bind(host, port)
    try:
        address = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
        seg = Segmenter(choose_model(model, None, provider), provider, engine)
        ui.out.print(f"skinseg serve {address}  model {ui.escape(str(seg.model_path))} "
                     f"({', '.join(seg.providers[:1])}, {workers} workers, queue {queue})", soft_wrap=True)
        if key is None and host not in LOOPBACK:
            ui.warn("--insecure-no-auth: anyone who can reach this address can use the service")
        settings = app.Settings(workers=workers, queue=queue, max_upload_mb=max_upload_mb, api_key=key,
                                cors=tuple(cors or ()), save=save, overlay_max=overlay_max)
        service = app.Service(seg, settings)
        app.configure_logging(quiet)
        app.warm_up(service)
        ui.out.print(f"ready: open {address}/ in a browser, or POST images to {address}/v1/segment", soft_wrap=True)
        config = uvicorn.Config(app.create_app(service), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=60, lifespan="off")
        server = app.GracefulServer(config)
        server.run(sockets=[sock])
        service.pool.shutdown(wait=True)
        ui.out.print("stopped: finished the requests in flight")
        return 0
    finally:
        sock.close()
