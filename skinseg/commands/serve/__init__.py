"""`skinseg serve`: the engine as an HTTP service and a web page (FastAPI + uvicorn, the [serve] extra).

Everything a user can get wrong (flags, the model, the address, the key) is checked and reported in
one line with exit code 2 before anything listens; SIGTERM or Ctrl-C stops accepting, finishes the
requests in flight and exits 0.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from pathlib import Path

from skinseg import ui
from skinseg.inference.options import EngineOptions
from skinseg.shared.errors import SkinsegError
from skinseg.shared.install import install_hint

LOOPBACK = ("127.0.0.1", "::1", "localhost")
WILDCARD = ("0.0.0.0", "::", "")


def _modules() -> tuple:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise SkinsegError(f"skinseg serve needs the serve extra ({exc.name} is missing): "
                           f"{install_hint('cpu,serve')}") from None
    from skinseg.commands.serve import app

    return uvicorn, app


def read_key_file(path: Path) -> str:
    """The key in --api-key-file: its first line that is not blank or a `#` comment, without a BOM or
    surrounding spaces. More than one such line is refused: which one the clients use would be a guess."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SkinsegError(f"--api-key-file {path}: cannot read it ({exc})") from None
    lines = [ln.strip() for ln in text.splitlines()]
    keys = [ln for ln in lines if ln and not ln.startswith("#")]
    if not keys:
        raise SkinsegError(f"--api-key-file {path}: no key in it; put the key on its first line")
    if len(keys) > 1:
        raise SkinsegError(f"--api-key-file {path}: {len(keys)} lines hold text; keep only the key (comments start "
                           "with #)")
    return keys[0]


def api_key(key_file: Path | None, host: str, insecure: bool) -> str | None:
    """The key clients must send: from --api-key-file or SKINSEG_API_KEY; required off loopback."""
    key = None
    if key_file is not None:
        key = read_key_file(key_file)
    elif os.environ.get("SKINSEG_API_KEY", "").strip():
        key = os.environ["SKINSEG_API_KEY"].strip().lstrip("\ufeff")
    if key is not None and len(key) < 16:
        raise SkinsegError("the API key is shorter than 16 characters; use a long random one "
                           "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if key is not None and not all(33 <= ord(ch) < 127 for ch in key):
        raise SkinsegError("the API key holds spaces or characters outside printable ASCII, which an "
                           "Authorization header cannot carry; use a random one "
                           "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if key is None and host not in LOOPBACK and not insecure:
        raise SkinsegError(f"--host {host} makes the service reachable from other machines: set an API key "
                           "(SKINSEG_API_KEY or --api-key-file), or pass --insecure-no-auth to serve without one")
    return key


def allowed_hosts(host: str, extra: list[str] | None, key: str | None) -> tuple[str, ...]:
    """The Host names the service answers to: loopback, the bound address, this machine's names and
    --allowed-host; '*' (any) only with a key. On a wildcard address with a key, any name is accepted:
    the key, not the name, is what keeps a rebound page out."""
    names = [*LOOPBACK, host, socket.gethostname(), socket.getfqdn()]
    extra = [h.strip() for h in extra or [] if h.strip()]
    if "*" in extra and key is None:
        raise SkinsegError("--allowed-host '*' without an API key would let any web page a user visits reach this "
                           "service (DNS rebinding); set a key, or list the names clients use")
    if host in WILDCARD and key is not None and not extra:
        return ("*",)
    return tuple(dict.fromkeys(n.lower() for n in [*names, *extra] if n))


def check_cors(cors: list[str] | None, key: str | None) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in cors or [] if o.strip())
    if "*" in origins and key is None:
        raise SkinsegError("--cors '*' without an API key would let every web site use this service through its "
                           "visitors' browsers; set a key, or name the origin (--cors https://viewer.example)")
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SkinsegError(f"--cors {origin}: an origin is scheme://host[:port], e.g. https://viewer.example")
    return origins


def open_files_for(connections: int) -> None:
    """Raise the open-file limit to what --max-connections needs (up to the hard limit), or say why not."""
    import resource

    need = connections + 128  # the model, logs, worker threads' files and the listening socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < need:
            raise SkinsegError(f"--max-connections {connections} needs {need} open files, but this process may open "
                               f"{soft} (ulimit -n); lower --max-connections or raise the limit")


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
              max_pixels: int | None = None, api_key_file: Path | None = None, insecure_no_auth: bool = False,
              cors: list[str] | None = None, allowed_host: list[str] | None = None, save: Path | None = None,
              overlay_max: int | None = None, max_connections: int = 256, client_timeout: float = 10.0,
              quiet: bool = False) -> int:
    """Check everything, load and warm the model, then serve until SIGTERM / Ctrl-C (exit code 0)."""
    import math

    uvicorn, app = _modules()
    from skinseg.commands.serve.protocol import Guard, protocol_class
    from skinseg.inference.segmenter import Segmenter
    from skinseg.runner.encodings import check_overlay_max
    from skinseg.runner.models import choose_model, provider_notes
    from skinseg.shared.images import max_pixels as reader_max_pixels
    from skinseg.shared.system import large_allocations_from_the_system

    if not 1 <= workers <= 64:
        raise SkinsegError(f"--workers {workers}: must be 1 to 64 engine threads")
    if not 0 <= queue <= 10_000:
        raise SkinsegError(f"--queue {queue}: must be 0 to 10000 waiting requests")
    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= 1024):
        raise SkinsegError(f"--max-upload-mb {max_upload_mb}: must be above 0 and at most 1024")
    pixels = app.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if not 1 <= pixels <= reader_max_pixels():
        raise SkinsegError(f"--max-pixels {pixels}: must be 1 to {reader_max_pixels()} (the reader's limit, "
                           "SKINSEG_MAX_PIXELS)")
    if not 1 <= max_connections <= 100_000:
        raise SkinsegError(f"--max-connections {max_connections}: must be 1 to 100000")
    if not (math.isfinite(client_timeout) and 0.5 <= client_timeout <= 3600):
        raise SkinsegError(f"--client-timeout {client_timeout}: must be 0.5 to 3600 seconds")
    if not 0 <= port <= 65535:
        raise SkinsegError(f"--port {port}: must be 0 to 65535 (0 = any free port)")
    check_overlay_max(overlay_max)
    key = api_key(api_key_file, host, insecure_no_auth)
    origins = check_cors(cors, key)
    hosts = allowed_hosts(host, allowed_host, key)
    open_files_for(max_connections)
    if save is not None:
        from skinseg.shared import files

        if save.exists() and not save.is_dir():
            raise SkinsegError(f"--save {save} is a file; give a folder for the uploads")
        files.ensure_writable_dir(save)
    sock = bind(host, port)
    try:
        address = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
        large_allocations_from_the_system()
        seg = Segmenter(choose_model(model, None, provider), provider, engine)
        ui.out.print(f"skinseg serve {address}  model {ui.escape(str(seg.model_path))} "
                     f"({', '.join(seg.providers[:1])}, {workers} workers, queue {queue})", soft_wrap=True)
        for line in provider_notes(seg):
            ui.out.print(f"  {ui.escape(line)}", soft_wrap=True)
        if key is None and host not in LOOPBACK:
            ui.warn("--insecure-no-auth: anyone who can reach this address can use the service")
        settings = app.Settings(workers=workers, queue=queue, max_upload_mb=max_upload_mb, max_pixels=pixels,
                                api_key=key, cors=origins, allowed_hosts=hosts, save=save, overlay_max=overlay_max,
                                max_connections=max_connections, client_timeout=client_timeout)
        service = app.Service(seg, settings)
        guard = Guard(max_connections, client_timeout, settings.max_upload,
                      lambda reason: service.metrics.refusals.labels(reason).inc())
        service.metrics.watch_connections(lambda: guard.open)
        app.configure_logging(quiet)
        app.warm_up(service)
        ui.out.print(f"ready: open {address}/ in a browser, or POST images to {address}/v1/segment", soft_wrap=True)
        config = uvicorn.Config(app.create_app(service), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=60, lifespan="off", http=protocol_class(guard),
                                timeout_keep_alive=5)
        server = app.GracefulServer(config)
        server.run(sockets=[sock])
        service.pool.shutdown(wait=True)
        service.parsers.shutdown(wait=True)
        ui.out.print("stopped: finished the requests in flight")
        return 0
    finally:
        sock.close()
