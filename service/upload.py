"""Read an upload as a stream, enforcing the size limit while reading.

Accepts ``multipart/form-data`` (the video in the field ``file``) or a raw body typed ``video/*`` or
``application/octet-stream``. The bytes go to a spooled temporary file (RAM up to a few MiB, disk
beyond); reading stops with 413 as soon as the limit is passed, so at most limit + one chunk is
ever held.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO, TypeVar

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

FILE_FIELD = "file"
SPOOL_BYTES = 4 * 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small extra fields of a multipart body

T = TypeVar("T")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"upload too large: the limit is {limit} bytes")


def _field_name(disposition: bytes) -> str | None:
    _, params = parse_options_header(disposition)
    name = params.get(b"name")
    return name.decode("utf-8", "replace") if name is not None else None


class _MultipartSink:
    """python-multipart callbacks writing the ``file`` part to ``out``, counting its bytes."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.out = out
        self.limit = limit
        self.size = 0
        self.fields: list[str] = []
        self.found = False
        self._in_file = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_cb,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._header_field = self._header_value = b""
        self._in_file = False

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        name = _field_name(self._headers.get(b"content-disposition", b""))
        self.fields.append(name or "?")
        if name == FILE_FIELD and not self.found:
            self._in_file = True
            self.found = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.out.write(data[start:end])

    def _part_end(self) -> None:
        self._in_file = False


class _RawBody:
    """A raw video body: every byte is the video."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.size += len(chunk)

    def finish(self) -> int:
        return self.size


class _MultipartBody:
    """A multipart/form-data body: the ``file`` part is the video, other parts are ignored."""

    def __init__(self, out: IO[bytes], limit: int, boundary: bytes | None) -> None:
        if not boundary:
            raise HTTPException(422, "multipart/form-data content type without a boundary")
        self.sink = _MultipartSink(out, limit)
        self.parser = _malformed_is_422(
            lambda: MultipartParser(boundary, self.sink.callbacks())  # type: ignore[arg-type]
        )

    def write(self, chunk: bytes) -> None:
        _malformed_is_422(lambda: self.parser.write(chunk))

    def finish(self) -> int:
        _malformed_is_422(self.parser.finalize)
        if not self.sink.found:
            fields = ", ".join(repr(f) for f in self.sink.fields) or "none"
            raise HTTPException(422, f"multipart form has no '{FILE_FIELD}' field (fields sent: {fields})")
        return self.sink.size


def _malformed_is_422(step: Callable[[], T]) -> T:
    try:
        return step()
    except HTTPException:
        raise
    except Exception as error:
        raise HTTPException(422, f"malformed multipart body: {error}") from error


def _content_type(request: Request) -> tuple[bool, dict[bytes, bytes]]:
    """(is multipart, content-type parameters); 415 for a type that cannot carry a video."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    mime = content_type.decode("latin-1").lower()
    is_multipart = mime == "multipart/form-data"
    if not (is_multipart or mime.startswith("video/") or mime == "application/octet-stream"):
        shown = mime or "none"
        raise HTTPException(
            415,
            f"unsupported content type {shown!r}: send multipart/form-data with the video in a '{FILE_FIELD}'"
            " field, or the raw video with a video/* or application/octet-stream content type",
        )
    return is_multipart, params


async def read_upload(request: Request, limit: int) -> IO[bytes]:
    """The uploaded video as a file positioned at 0 (caller closes it); raises HTTPException."""
    if request.headers.get("content-length") == "0":
        raise HTTPException(422, "the upload is empty")
    is_multipart, params = _content_type(request)
    body_limit = limit + MULTIPART_OVERHEAD if is_multipart else limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(limit)

    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    try:
        body = _MultipartBody(out, limit, params.get(b"boundary")) if is_multipart else _RawBody(out)
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(limit)
            if chunk:
                body.write(chunk)
        if body.finish() == 0:
            raise HTTPException(422, "the upload is empty")
        out.seek(0)
        return out
    except ClientDisconnect as error:
        out.close()
        raise HTTPException(400, "the client disconnected before the upload was complete") from error
    except BaseException:
        out.close()
        raise
