"""The HTTP service: one loaded `Segmenter`, N engine threads behind a bounded queue, and the routes.

Every answer to a bad request is JSON `{"error": "<one line>"}` with the status the docs list; an image
costs one request, never the service. A request is admitted (key, size declared, a queue place) before
a byte of its body is read, so what the service holds is bounded by workers + queue, whatever arrives.
What a request carries is only ever held in memory (no path or file name from it is opened; nothing is
written unless --save names a folder, and then only images that were segmented).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import importlib.util
import logging
import os
import shutil
import signal
import threading
import time
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
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from skinseg.commands.serve.errors import ClientGone, Refused
from skinseg.commands.serve.gate import Gate
from skinseg.commands.serve.metrics import Metrics
from skinseg.commands.serve.upload import READS, check_content_type, read_upload
from skinseg.inference.segmenter import Segmenter
from skinseg.runner.measurements import check_spacing
from skinseg.runner.result import MASK_FORMATS, Result
from skinseg.shared import files
from skinseg.shared.dicom import DICOM_MEDIA_TYPE
from skinseg.shared.errors import InputError, SkinsegError, megapixels
from skinseg.shared.images import encode, image_kind, probe_size
from skinseg.shared.system import give_back_memory

log = logging.getLogger("skinseg.serve")
DEFAULT_MAX_PIXELS = 40_000_000  # the largest dermoscopy frames (ISIC: 6688x4439) with room; 14000^2 is refused
BUSY_PAUSE = 0.1  # seconds a request waits for a queue place before its 503
KEEP_BUFFER_PIXELS = 12_000_000  # a thread keeps its full-size buffer up to this; larger ones go back after use


@dataclass(frozen=True)
class Settings:
    workers: int = 2
    queue: int = 16
    max_upload_mb: float = 50.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    api_key: str | None = None
    cors: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    save: Path | None = None
    overlay_max: int | None = None
    max_connections: int = 256
    client_timeout: float = 10.0

    @property
    def max_upload(self) -> int:
        return int(self.max_upload_mb * 1e6)


class Service:
    """The engine as the routes use it: admission (N running + a bounded queue), then a worker thread."""

    def __init__(self, seg: Segmenter, settings: Settings) -> None:
        self.seg, self.settings = seg, settings
        seg.keep_buffer_pixels = KEEP_BUFFER_PIXELS
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="skinseg-engine")
        self.parsers = ThreadPoolExecutor(2, thread_name_prefix="skinseg-parse")  # multipart, off the event loop
        self.capacity = settings.workers + settings.queue
        self.inside = 0  # requests admitted and not finished (reading, waiting or running)
        self.lock = threading.Lock()
        self.ready = False
        self.save_problem: str | None = None  # why uploads cannot be kept now (--save on a full disk)
        self.metrics = Metrics()
        self.metrics.capacity.set(self.capacity)

    def admit(self) -> bool:
        with self.lock:
            if self.inside >= self.capacity:
                return False
            self.inside += 1
            self.metrics.depth.set(self.inside)
            return True

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1
            self.metrics.depth.set(self.inside)

    def segment(self, data: bytes | bytearray, name: str, mask_format: str, overlay: bool,
                pixel_spacing: float | None = None) -> tuple[dict[str, Any], Result]:
        """In a worker thread: decode, predict and encode exactly as infer does; (the JSON answer, the result)."""
        t = time.perf_counter()
        pixels = 0
        try:
            loaded = self.seg.load(data, name)
            pixels = loaded.height * loaded.width
            result = Result.from_prediction(self.seg.predict(loaded), loaded, data, pixel_spacing,
                                            self.seg.review_threshold)
            answer: dict[str, Any] = result.figures()
            answer["mask_format"] = mask_format
            answer["mask"] = result.mask_field(mask_format)
            if overlay:
                answer["overlay"] = base64.b64encode(result.overlay_jpeg(self.settings.overlay_max)).decode("ascii")
            result.png  # noqa: B018 - encoded here, in the worker thread, not on the event loop
            result.loaded = result.source = None  # the decode and the upload are not needed past this point
        finally:
            if pixels > KEEP_BUFFER_PIXELS:  # a large image's pages go back to the system, not to the heap
                loaded = None
                give_back_memory()
        result.seconds = time.perf_counter() - t
        answer["seconds"] = round(result.seconds, 3)
        return answer, result

    def save_upload(self, rid: str, data: bytes | bytearray) -> None:
        """Keep an accepted upload in --save; a write that fails makes the service not ready."""
        folder = self.settings.save
        assert folder is not None
        ext = {"jpeg": ".jpg", "tiff": ".tif"}.get(image_kind(data) or "", f".{image_kind(data)}")
        try:
            files.write_bytes(folder / f"{rid}{ext}", data)
        except (OSError, SkinsegError) as exc:
            cause = exc.__cause__ if isinstance(exc, SkinsegError) and exc.__cause__ else exc
            why = getattr(cause, "strerror", None) or str(cause)
            self.save_problem = f"cannot keep uploads in --save {folder}: {why}; free space or fix the folder"
            log.error("request %s: %s", rid, self.save_problem)
            raise Refused(503, f"not ready: {self.save_problem}", {"Retry-After": "30"}, reason="save") from None

    def saving_blocked(self) -> str | None:
        """Why uploads cannot be kept now, re-checked (space freed: ready again)."""
        if self.save_problem is None or self.settings.save is None:
            return None
        with contextlib.suppress(OSError):
            if shutil.disk_usage(self.settings.save).free > self.settings.max_upload and \
                    os.access(self.settings.save, os.W_OK):
                self.save_problem = None
        return self.save_problem

    def model_info(self) -> dict[str, Any]:
        return {"file": self.seg.model_path.name, "sha256": self.seg.sha256,
                "format": self.seg.spec.metadata.format}  # None: a plain ONNX model without skinseg metadata


def page() -> str:
    return resources.files("skinseg.commands.serve").joinpath("page.html").read_text(encoding="utf-8")


def display_name(filename: str | None) -> str:
    """The client's file name for messages only (never opened): its last part, printable, short."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch if ch.isprintable() else "_" for ch in base)[:100].strip()
    return clean or "the uploaded image"


def check_pixels(data: bytes | bytearray, name: str, limit: int) -> None:
    """Refuse from the header an image above the service's pixel budget (before any decoding)."""
    if image_kind(data) is None:
        raise Refused(415, f"{name}: not a readable image (corrupt, truncated or unsupported format); "
                           f"send a {READS} file", reason="unreadable")
    size = probe_size(data)
    if size is None and image_kind(data) == "dicom" and importlib.util.find_spec("pydicom") is None:
        raise Refused(415, f"{name}: this service reads no DICOM (its [dicom] extra is not installed)",
                      reason="unreadable")
    if size is None:
        raise Refused(415, f"{name}: its header does not give the image's size (truncated or damaged)",
                      reason="unreadable")
    if size[0] * size[1] > limit:
        raise Refused(413, f"{name}: {size[0]}x{size[1]} is {megapixels(size[0] * size[1])} MP, above this "
                           f"service's {megapixels(limit)} MP limit (--max-pixels); send a smaller image",
                      reason="pixels")


def create_app(service: Service) -> Gate:
    """The routes (POST /v1/segment, GET /v1/model, /healthz, /readyz, /metrics, the page at /) behind the Gate."""
    settings, metrics = service.settings, service.metrics
    app = FastAPI(title="skinseg", docs_url=None, redoc_url=None, openapi_url=None)
    if settings.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def error(status: int, message: str, extra: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=extra)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        metrics.refusals.labels(exc.reason).inc()
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        words = {404: f"no such page: {request.url.path}", 405: f"{request.method} is not allowed here"}
        return error(exc.status_code, words.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "bad request: " + "; ".join(str(e.get("msg", e)) for e in exc.errors())[:300])

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        got = request.headers.get("authorization", "")
        token = got[7:].strip() if got.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise Refused(401, "missing or wrong API key: send Authorization: Bearer <key>",
                          {"WWW-Authenticate": "Bearer"}, reason="key")

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
        if blocked := service.saving_blocked():
            return error(503, f"not ready: {blocked}")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics_page(request: Request) -> Response:
        authorize(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        authorize(request)
        engine = service.seg.describe() | {"model": service.seg.model_path.name}  # never a path on this machine
        return {"model": service.model_info(), "providers": service.seg.providers, "engine": engine,
                "options": service.seg.options.as_dict(),
                "service": {"workers": settings.workers, "queue": settings.queue,
                            "max_upload_mb": settings.max_upload_mb, "max_pixels": settings.max_pixels}}

    def admission(request: Request) -> tuple[str, str, bool, float | None]:
        """Everything checked before the body is read: key, options, type, declared size, readiness."""
        authorize(request)
        fmt = request.query_params.get("mask", "png")
        if fmt not in MASK_FORMATS:
            raise Refused(400, f"mask={fmt}: choose one of {', '.join(MASK_FORMATS)}", reason="options")
        accept = request.headers.get("accept", "").split(",")[0].split(";")[0].strip().lower()
        by_accept = {"image/png": "png", DICOM_MEDIA_TYPE: "dicom"}.get(accept, "json")
        answer = request.query_params.get("format") or by_accept
        if answer not in ("json", "png", "dicom"):
            raise Refused(400, f"format={answer[:20]}: choose json, png or dicom", reason="options")
        overlay = request.query_params.get("overlay", "false").lower() in ("1", "true", "yes")
        spacing = request.query_params.get("pixel_spacing")
        try:
            pixel_spacing = check_spacing(float(spacing), "pixel_spacing") if spacing else None
        except (ValueError, SkinsegError) as exc:
            why = str(exc) if isinstance(exc, SkinsegError) else f"pixel_spacing {spacing[:30]!r}: not a number"
            raise Refused(400, why + "; give millimetres per pixel, e.g. ?pixel_spacing=0.02",
                          reason="options") from None
        check_content_type(request.headers.get("content-type", ""))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_upload:
            raise Refused(413, f"upload of {int(declared) / 1e6:.1f} MB is above the {settings.max_upload_mb:g} MB "
                               "limit (--max-upload-mb)", reason="upload size", close=True)
        if blocked := service.saving_blocked():
            raise Refused(503, f"not ready: {blocked}", {"Retry-After": "30"}, reason="save")
        return fmt, answer, overlay, pixel_spacing

    @app.post("/v1/segment")
    async def segment(request: Request) -> Response:
        fmt, kind, overlay, pixel_spacing = admission(request)
        admitted = service.admit()
        if not admitted:  # a moment's wait: a place may free up, and a client that does not back off
            await asyncio.sleep(BUSY_PAUSE)  # cannot spin on 503s fast enough to take the engine's CPU
            admitted = service.admit()
        if not admitted:
            raise Refused(503, "busy: every engine worker and queue place is taken; retry shortly",
                          {"Retry-After": "1"}, reason="busy")
        try:
            try:
                data, filename = await read_upload(request.receive, request.headers.get("content-type", ""),
                                                   settings.max_upload, settings.client_timeout, service.parsers)
            except ClientGone:
                return Response(status_code=499)  # nobody to answer; counted as 499 like nginx does
            name = display_name(filename) if filename is not None else "the uploaded image"
            if not data:
                multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
                where = "the multipart field 'image' is empty" if multipart else "the request body is empty"
                raise Refused(400, f"no image: {where}; send the image as the body (Content-Type image/*) or as the "
                                   "multipart field 'image'", reason="no image")
            check_pixels(data, name, settings.max_pixels)
            try:
                loop = asyncio.get_running_loop()
                answer, result = await loop.run_in_executor(service.pool, service.segment, data, name, fmt, overlay,
                                                            pixel_spacing)
                if kind == "dicom":
                    if result.dicom_source is None:
                        raise Refused(406, f"{name}: a DICOM Segmentation answers only a DICOM upload "
                                           "(Content-Type application/dicom); ask for JSON or image/png",
                                      reason="options")
                    files = await loop.run_in_executor(service.pool, result.dicom_files, service.seg.model_path.name,
                                                       service.seg.sha256, False)
                    seg = files["seg"]
            except InputError as exc:
                raise Refused(422, str(exc), reason="unreadable") from None
            except SkinsegError as exc:  # the model failed on this input: the service goes on
                raise Refused(500, str(exc), reason="engine") from None
            if settings.save is not None:
                service.save_upload(request.scope["state"]["rid"], data)
        except Refused as exc:
            metrics.errors.labels(str(exc.status)).inc()
            raise
        finally:
            service.leave()
        metrics.images.inc()
        if kind == "png":
            return Response(result.png, media_type="image/png", headers=result.headers(service.seg.sha256))
        if kind == "dicom":
            return Response(seg, media_type=DICOM_MEDIA_TYPE, headers=result.headers(service.seg.sha256))
        answer["model"] = service.model_info()
        return JSONResponse(answer)

    return Gate(app, metrics, settings.allowed_hosts, settings.cors)


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
