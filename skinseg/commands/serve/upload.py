"""Reading an upload: the raw body or the multipart field `image`, streamed, bounded and off the loop.

The body is taken chunk by chunk from the ASGI `receive` with an idle deadline (a stalled upload is a
408, not a held slot), into one growing buffer that never passes the upload limit (413 as soon as it
would). Multipart bodies go through python-multipart's streaming parser (the one Starlette uses) in a
small thread pool, never on the event loop: only the `image` part is kept, other parts are counted
and dropped, and a body with more than `MAX_PARTS` parts or oversized part headers is refused at the
part that breaks the rule, so a flood of tiny parts costs the one request, not every client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from skinseg.commands.serve.errors import ClientGone, Refused

MAX_PARTS = 8  # the page sends one; room for a client's own small fields
READS = "JPEG, PNG, WebP, TIFF, BMP or DICOM"


def too_large(limit: int) -> Refused:
    return Refused(413, f"upload is above the {limit / 1e6:g} MB limit (--max-upload-mb)", reason="upload size",
                   close=True)


class ImagePart:
    """Callbacks for python-multipart that keep the field `image` (and its file name) and nothing else."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts = 0
        self.data: bytearray | None = None  # the image part's bytes, once its headers named it
        self.filename: str | None = None
        self.found = False
        self._field = b""
        self._headers: dict[bytes, bytes] = {}
        self._value = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data}

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Refused(400, f"multipart body with more than {MAX_PARTS} parts; send the image alone as the "
                               "field 'image'", reason="multipart", close=True)
        self._headers, self.data = {}, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if params.get(b"name") == b"image" and not self.found:
            self.found = True
            self.data = bytearray()
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.data is None:
            return  # not the image: dropped
        if len(self.data) + end - start > self.limit:
            raise too_large(self.limit)
        self.data += data[start:end]


async def read_upload(receive: Callable[[], Awaitable[dict[str, Any]]], content_type: str, limit: int,
                      timeout: float, pool: Executor) -> tuple[bytearray, str | None]:
    """(image bytes, the client's file name or None) from a raw body or the multipart field `image`."""
    kind, params = parse_options_header(content_type)
    parser: MultipartParser | None = None
    part: ImagePart | None = None
    if kind == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise Refused(400, "multipart/form-data without a boundary; let the client library build the body",
                          reason="multipart", close=True)
        part = ImagePart(limit)
        parser = MultipartParser(boundary, part.callbacks())
    body = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            raise Refused(408, f"the upload stalled: nothing arrived for {timeout:g} s (--client-timeout)",
                          reason="body timeout", close=True) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            if parser is not None:
                try:
                    await loop.run_in_executor(pool, parser.write, chunk)
                except MultipartParseError as exc:
                    raise Refused(400, f"malformed multipart body ({exc})", reason="multipart", close=True) from None
            else:
                if len(body) + len(chunk) > limit:
                    raise too_large(limit)
                body += chunk
        if not message.get("more_body", False):
            break
    if parser is None:
        return body, None
    assert part is not None
    try:
        await loop.run_in_executor(pool, parser.finalize)
    except MultipartParseError as exc:
        raise Refused(400, f"malformed multipart body ({exc})", reason="multipart") from None
    if part.data is None:
        raise Refused(400, "no image: send it as the multipart field 'image' or as the raw body with "
                           "Content-Type image/*", reason="no image")
    return part.data, part.filename


def check_content_type(content_type: str) -> None:
    """Refuse, before any body is read, a declared type that cannot hold an image."""
    kind = content_type.split(";")[0].strip().lower()
    if kind != "multipart/form-data" and not kind.startswith("image/") and kind not in ("application/octet-stream",
                                                                                            "application/dicom", ""):
        raise Refused(415, f"Content-Type {kind}: send an image ({READS}) as image/*, application/dicom or "
                           "multipart/form-data",
                      reason="content type")
