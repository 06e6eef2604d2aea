"""The door every request passes first (a plain ASGI middleware, outermost): request id, the Host
allow-list, the cross-origin rule, one JSON line for any failure, and the metrics of every answer.

Why here and not in the routes: a request from a page on another site, or through a DNS-rebound name,
must be refused before any route reads a byte of its body, and a bug must cost one 500 line in the
log, not a traceback (Starlette's own error middleware re-raises to the server, which prints one).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from skinseg.commands.serve.metrics import Metrics

log = logging.getLogger("skinseg.serve")
ROUTES = {"/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/segment"}
ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


def host_name(host: str) -> str:
    """The name part of a Host header, lower case, without port, brackets or a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class Gate:
    """Host and Origin checks, request ids, metrics and the last word on errors, for every request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, allowed_hosts: tuple[str, ...],
                 cors: tuple[str, ...]) -> None:
        self.app, self.metrics = app, metrics
        self.any_host = "*" in allowed_hosts
        self.hosts = {host_name(h) for h in allowed_hosts if h != "*"}
        self.any_origin = "*" in cors
        self.origins = {o.rstrip("/").lower() for o in cors}

    def refusal(self, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """(status, message, reason) for a request the door refuses, else None."""
        host = headers.get("host")
        if host is not None and not self.any_host and host_name(host) not in self.hosts:
            return (421, f"Host {host_name(host)[:100]!r} is not a name this service answers to; add it with "
                         "--allowed-host if it is yours", "host")
        origin = headers.get("origin")
        if origin is not None:
            origin = origin.rstrip("/").lower()
            own = {f"http://{host}".lower(), f"https://{host}".lower()} if host else set()
            if origin not in own and not self.any_origin and origin not in self.origins:
                return (403, f"cross-origin request from {origin[:100]} refused; a page on another site may use "
                             "this service only if it is started with --cors ORIGIN", "origin")
        elif headers.get("sec-fetch-site") in ("cross-site", "same-site") and \
                headers.get("sec-fetch-mode") != "navigate" and not self.any_origin:
            return (403, "cross-site request refused (Sec-Fetch-Site); start the service with --cors ORIGIN to "
                         "allow a page on another site", "origin")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t = time.perf_counter()
        rid = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["rid"] = rid
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status = [0]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        refused = self.refusal(headers)
        try:
            if refused is not None:
                self.metrics.refusals.labels(refused[2]).inc()
                await answer(send_with_id, refused[0], refused[1])
            else:
                await self.app(scope, receive, send_with_id)
        except Exception as exc:  # a bug or a resource failure: one line in the log, one JSON line out
            log.error("request %s failed: %s: %s", rid, type(exc).__name__, str(exc).splitlines()[0][:300]
                      if str(exc) else "")
            if status[0] == 0:
                await answer(send_with_id, 500, f"internal error ({type(exc).__name__}); the service goes on")
        route = scope["path"] if scope["path"] in ROUTES else "other"
        seconds = time.perf_counter() - t
        self.metrics.answered(route, status[0], seconds)
        log.info("%s %s %s %s %s bytes %.3f s", rid, scope["method"], route, status[0],
                 headers.get("content-length", "-"), seconds)


async def answer(send: Callable[..., Awaitable[Any]], status: int, message: str) -> None:
    """One JSON error line; the connection closes after it (the body, if any, was never read)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
