"""The HTTP service: one loaded `Segmenter`, N engine threads behind a bounded queue, and the routes.

Every answer to a bad request is JSON `{"error": "<one line>"}` with the status the README lists; an
image costs one request, never the service. What a request carries is only ever held in memory (no path
or file name from it is opened, nothing is written unless --save names a folder).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import email.policy
import hmac
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinseg.commands.infer import overlay_jpeg, prediction_figures
from skinseg.commands.serve.answers import MASK_FORMATS, figures, headers, mask_field
from skinseg.inference.segmenter import Segmenter
from skinseg.shared import files
from skinseg.shared.errors import InputError, SkinsegError
from skinseg.shared.images import encode, image_kind

log = logging.getLogger("skinseg.serve")
READS = "JPEG, PNG, WebP, TIFF or BMP"


class Refused(Exception):
    """A request answered with an error status and one line."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Settings:
    workers: int = 2
    queue: int = 16
    max_upload_mb: float = 50.0
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    save: Path | None = None
    overlay_max: int | None = None


class Service:
    """The engine as the routes use it: admission (N running + a bounded queue), then a worker thread."""

    def __init__(self, seg: Segmenter, settings: Settings) -> None:
        self.seg, self.settings = seg, settings
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="skinseg-engine")
        self.capacity = settings.workers + settings.queue
        self.inside = 0  # requests admitted and not finished (running + waiting)
        self.lock = threading.Lock()
        self.ready = False
        self.registry = CollectorRegistry()
        self.requests = Counter("skinseg_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("skinseg_request_seconds", "Time to answer a segment request", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.depth = Gauge("skinseg_queue_depth", "Segment requests admitted and not yet answered",
                           registry=self.registry)
        self.images = Counter("skinseg_images", "Images segmented", registry=self.registry)
        self.errors = Counter("skinseg_errors", "Segment requests refused or failed, by status", ["status"],
                              registry=self.registry)

    def admit(self) -> bool:
        with self.lock:
            if self.inside >= self.capacity:
                return False
            self.inside += 1
            self.depth.set(self.inside)
            return True

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1
            self.depth.set(self.inside)

    def segment(self, data: bytes, name: str, mask_format: str, overlay: bool) -> tuple[dict[str, Any], bytes, float]:
        """In a worker thread: decode, predict, encode exactly as infer does; (answer, mask PNG, seconds)."""
        t = time.perf_counter()
        loaded = self.seg.load(data, name)
        pred = self.seg.predict(loaded)
        row = prediction_figures(pred)
        png = encode(".png", pred.mask)
        answer: dict[str, Any] = figures(row)
        answer["mask_format"] = mask_format
        answer["mask"] = mask_field(pred.mask, png, mask_format)
        if overlay:
            jpeg = overlay_jpeg(data, loaded, pred.mask, self.settings.overlay_max)
            answer["overlay"] = base64.b64encode(jpeg).decode("ascii")
        seconds = time.perf_counter() - t
        answer["seconds"] = round(seconds, 3)
        answer["_row"] = row
        return answer, png, seconds

    def model_info(self) -> dict[str, Any]:
        return {"file": self.seg.model_path.name, "sha256": self.seg.sha256,
                "format": self.seg.spec.metadata.format}  # None: a plain ONNX model without skinseg metadata


def page() -> str:
    return resources.files("skinseg.commands.serve").joinpath("page.html").read_text(encoding="utf-8")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"upload of {int(declared) / 1e6:.1f} MB is above the {limit / 1e6:.0f} MB limit "
                           "(--max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"upload is above the {limit / 1e6:.0f} MB limit (--max-upload-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def image_from(content_type: str, body: bytes) -> tuple[bytes, str]:
    """(image bytes, name for messages) from a raw image body or the multipart field `image`."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        for part in msg.iter_parts() if msg.is_multipart() else []:
            if part.get_param("name", header="content-disposition") == "image":
                return part.get_payload(decode=True) or b"", display_name(part.get_filename())
        raise Refused(400, "no image: send it as the multipart field 'image' or as the raw body with "
                           "Content-Type image/*")
    if not body:
        raise Refused(400, "no image: the request body is empty; send the image as the body (Content-Type "
                           "image/*) or as the multipart field 'image'")
    if not kind.startswith("image/") and kind not in ("application/octet-stream", ""):
        raise Refused(415, f"Content-Type {kind}: send an image ({READS}) as image/* or multipart/form-data")
    return body, "the uploaded image"


def display_name(filename: str | None) -> str:
    """The client's file name for messages only (never opened): its last part, printable, short."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch if ch.isprintable() else "_" for ch in base)[:100].strip()
    return clean or "the uploaded image"


def create_app(service: Service) -> FastAPI:
    """The routes: POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics and the page at /."""
    settings = service.settings
    app = FastAPI(title="skinseg", docs_url=None, redoc_url=None, openapi_url=None)
    if settings.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def error(status: int, message: str, extra: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=extra)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        words = {404: f"no such page: {request.url.path}", 405: f"{request.method} is not allowed here"}
        return error(exc.status_code, words.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "bad request: " + "; ".join(str(e.get("msg", e)) for e in exc.errors())[:300])

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed: %s: %s", getattr(request.state, "rid", "-"), type(exc).__name__, exc)
        return error(500, f"internal error ({type(exc).__name__}); the service goes on")

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        got = request.headers.get("authorization", "")
        token = got[7:].strip() if got.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise Refused(401, "missing or wrong API key: send Authorization: Bearer <key>",
                          {"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def _log(request: Request, call_next: Any) -> Response:
        rid = request.state.rid = uuid.uuid4().hex[:12]
        t = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Request-Id"] = rid
        route = request.url.path if request.url.path in ROUTES else "other"
        service.requests.labels(route, str(response.status_code)).inc()
        log.info("%s %s %s %s %s bytes %.3f s", rid, request.method, route, response.status_code,
                 request.headers.get("content-length", "-"), time.perf_counter() - t)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not service.ready:
            return error(503, "not ready: the model is loading or warming up")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        authorize(request)
        d = service.seg.describe()
        return {"model": service.model_info(), "providers": service.seg.providers, "engine": d,
                "options": service.seg.options.as_dict(),
                "service": {"workers": settings.workers, "queue": settings.queue,
                            "max_upload_mb": settings.max_upload_mb}}

    @app.post("/v1/segment")
    async def segment(request: Request) -> Response:
        t = time.perf_counter()
        try:
            authorize(request)
            fmt = request.query_params.get("mask", "png")
            if fmt not in MASK_FORMATS:
                raise Refused(400, f"mask={fmt}: choose one of {', '.join(MASK_FORMATS)}")
            want_png = request.query_params.get("format") == "png" or \
                request.headers.get("accept", "").split(",")[0].strip() == "image/png"
            overlay = request.query_params.get("overlay", "false").lower() in ("1", "true", "yes")
            data, name = image_from(request.headers.get("content-type", ""),
                                    await read_body(request, int(settings.max_upload_mb * 1e6)))
            if image_kind(data) is None:
                raise Refused(415, f"{name}: not a readable image (corrupt, truncated or unsupported format); "
                                   f"send a {READS} file")
            if settings.save is not None:
                ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(image_kind(data) or "", f".{image_kind(data)}")
                files.write_bytes(settings.save / f"{request.state.rid}{ext}", data)
            if not service.admit():
                raise Refused(503, "busy: every engine worker and queue place is taken; retry shortly",
                              {"Retry-After": "1"})
            try:
                loop = asyncio.get_running_loop()
                answer, png, seconds = await loop.run_in_executor(service.pool, service.segment, data, name, fmt,
                                                                  overlay)
            except InputError as exc:
                raise Refused(422, str(exc)) from None
            except SkinsegError as exc:  # the model failed on this input: the service goes on
                raise Refused(500, str(exc)) from None
            finally:
                service.leave()
        except Refused as exc:
            service.errors.labels(str(exc.status)).inc()
            raise
        service.images.inc()
        service.latency.observe(time.perf_counter() - t)
        row = answer.pop("_row")
        if want_png:
            return Response(png, media_type="image/png", headers=headers(row, seconds, service.seg.sha256))
        answer["model"] = service.model_info()
        return JSONResponse(answer)

    ROUTES = {"/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/segment"}
    return app


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM / SIGINT after a graceful stop (exit 143 / 130); a service asked to
    stop that stopped cleanly exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def warm_up(service: Service) -> None:
    """One synthetic image through the whole path, so the first request is not the slow one."""
    from skinseg.shared.synthetic import synth_pair

    rgb, _ = synth_pair(192, 256, rng=0)
    service.segment(encode(".jpg", rgb), "warm-up image", "png", True)
    service.ready = True


def configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
