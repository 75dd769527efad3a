"""Read an upload as a stream, enforcing the size, time and capacity limits while reading.

Accepts ``multipart/form-data`` (the video in the field ``file``) or a raw body typed ``video/*`` or
``application/octet-stream``. The bytes go to a spooled temporary file (RAM up to a few MiB, disk
beyond); reading stops with 413 as soon as the limit is passed, so at most limit + one chunk is
ever held.

A hostile client cannot hold the service with an upload (:class:`UploadGate`):

* uploads in progress are counted apart from the decode/inference slots (``max_uploads``), and the
  bytes held by every upload alive (receiving, queued, decoding) are bounded (``max_spool_bytes``);
  beyond either: 503 + Retry-After;
* every upload has a read deadline: after ``upload_grace_s`` it must keep an average of
  ``upload_min_bytes_per_s`` and it must end within ``upload_timeout_s``; a client that misses
  either gets 408 with the connection closed and its spool file removed;
* on a drain (SIGTERM) unfinished uploads are answered 503 + Retry-After at once (connection
  closed) instead of being waited for;
* a multipart body has at most ``max_multipart_parts`` parts of at most
  ``max_multipart_header_bytes`` of headers each, and an error names at most a few fields;
* a full spool disk is 507 + Retry-After, not a 500.
"""

from __future__ import annotations

import asyncio
import errno
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

FILE_FIELD = "file"
SPOOL_BYTES = 4 * 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # headers, boundaries and small extra fields of a multipart body
RETRY_AFTER_S = 1
DRAIN_RETRY_AFTER_S = 5
NO_SPACE_RETRY_AFTER_S = 30
SHOWN_FIELDS = 3  # field names an error message lists
SHOWN_NAME_CHARS = 40  # characters of each
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

T = TypeVar("T")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"upload too large: the limit is {limit} bytes")


def _closing(status: int, detail: str, retry_after_s: int | None = None) -> HTTPException:
    """An error after which the connection is closed (the rest of the body is never read)."""
    headers = {"Connection": "close"}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return HTTPException(status, detail, headers=headers)


def _write(out: IO[bytes], data: bytes) -> None:
    try:
        out.write(data)
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise _closing(
                507, "no space left to receive the upload; retry later", NO_SPACE_RETRY_AFTER_S
            ) from error
        raise


def _field_name(disposition: bytes) -> str | None:
    _, params = parse_options_header(disposition)
    name = params.get(b"name")
    return name.decode("utf-8", "replace") if name is not None else None


def _shown(name: str) -> str:
    return repr(name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "...")


def _field_list(fields: list[str]) -> str:
    """At most SHOWN_FIELDS names, each cut to SHOWN_NAME_CHARS characters: an error stays small."""
    if not fields:
        return "none"
    shown = ", ".join(_shown(f) for f in fields[:SHOWN_FIELDS])
    more = len(fields) - SHOWN_FIELDS
    return f"{shown} and {more} more" if more > 0 else shown


@dataclass(frozen=True)
class UploadPolicy:
    """The limits of :class:`UploadGate` (from the settings of the same names)."""

    max_bytes: int
    max_uploads: int = 128
    max_spool_bytes: int = 1024 * 1024 * 1024
    timeout_s: float = 300.0
    min_bytes_per_s: int = 16 * 1024
    grace_s: float = 5.0
    max_parts: int = 16
    max_part_header_bytes: int = 8 * 1024


class HeldUpload:
    """A received upload: ``file`` positioned at 0. :meth:`close` removes the spool file and gives
    its bytes back to the gate's spool budget."""

    def __init__(self, file: IO[bytes], size: int, gate: UploadGate) -> None:
        self.file = file
        self.size = size
        self._gate: UploadGate | None = gate
        self._deferred = False

    def close_after(self, job: asyncio.Future[Any]) -> None:
        """The file is still read by ``job`` (a decode past its deadline): close it when that ends."""
        self._deferred = True
        job.add_done_callback(lambda _job: self._close())

    def close(self) -> None:
        if not self._deferred:
            self._close()

    def _close(self) -> None:
        self.file.close()
        if self._gate is not None:
            self._gate.spool_bytes -= self.size
            self._gate = None


class UploadGate:
    """Uploads in progress and spool bytes held, bounded; one per app, used on the event loop only."""

    def __init__(self, policy: UploadPolicy) -> None:
        self.policy = policy
        self.receiving = 0
        self.spool_bytes = 0
        self._stopped: asyncio.Event | None = None

    @property
    def stopped(self) -> asyncio.Event:
        if self._stopped is None:
            self._stopped = asyncio.Event()
        return self._stopped

    def stop(self) -> None:
        """The drain: every unfinished upload is answered 503 and closed, new ones too."""
        self.stopped.set()

    def hold(self, size: int) -> None:
        """Count ``size`` more bytes against max_spool_bytes (503 when they do not fit)."""
        if self.spool_bytes + size > self.policy.max_spool_bytes:
            raise _closing(
                503,
                f"busy: uploads already hold {self.spool_bytes} bytes (max_spool_bytes); "
                f"retry after {RETRY_AFTER_S} s",
                RETRY_AFTER_S,
            )
        self.spool_bytes += size

    async def receive(self, request: Request) -> HeldUpload:
        """The uploaded video (caller closes it); raises HTTPException."""
        if self.stopped.is_set():
            raise _closing(503, "the service is shutting down", DRAIN_RETRY_AFTER_S)
        if self.receiving >= self.policy.max_uploads:
            raise _closing(
                503,
                f"busy: {self.policy.max_uploads} uploads already in progress; retry after {RETRY_AFTER_S} s",
                RETRY_AFTER_S,
            )
        self.receiving += 1
        held = 0
        try:
            file, held = await _read_upload(request, self)
            return HeldUpload(file, held, self)
        finally:
            self.receiving -= 1


class _MultipartSink:
    """python-multipart callbacks writing the ``file`` part to ``out``, counting its bytes."""

    def __init__(self, out: IO[bytes], limit: int, policy: UploadPolicy) -> None:
        self.out = out
        self.limit = limit
        self.policy = policy
        self.size = 0
        self.parts = 0
        self._header_bytes = 0
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
        self.parts += 1
        if self.parts > self.policy.max_parts:
            raise HTTPException(
                422, f"multipart form has more than {self.policy.max_parts} parts (max_multipart_parts)"
            )
        self._header_bytes = 0
        self._headers = {}
        self._header_field = self._header_value = b""
        self._in_file = False

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.policy.max_part_header_bytes:
            raise HTTPException(
                422,
                f"a multipart part has more than {self.policy.max_part_header_bytes} bytes of headers "
                "(max_multipart_header_bytes)",
            )

    def _header_field_cb(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
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
            _write(self.out, data[start:end])

    def _part_end(self) -> None:
        self._in_file = False


class _RawBody:
    """A raw video body: every byte is the video."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0

    def write(self, chunk: bytes) -> None:
        _write(self.out, chunk)
        self.size += len(chunk)

    def finish(self) -> int:
        return self.size


class _MultipartBody:
    """A multipart/form-data body: the ``file`` part is the video, other parts are ignored."""

    def __init__(self, out: IO[bytes], limit: int, boundary: bytes | None, policy: UploadPolicy) -> None:
        if not boundary:
            raise HTTPException(422, "multipart/form-data content type without a boundary")
        self.sink = _MultipartSink(out, limit, policy)
        self.parser = _malformed_is_422(
            lambda: MultipartParser(boundary, self.sink.callbacks())  # type: ignore[arg-type]
        )

    def write(self, chunk: bytes) -> None:
        _malformed_is_422(lambda: self.parser.write(chunk))

    def finish(self) -> int:
        _malformed_is_422(self.parser.finalize)
        if not self.sink.found:
            fields = _field_list(self.sink.fields)
            raise HTTPException(422, f"multipart form has no '{FILE_FIELD}' field (fields sent: {fields})")
        return self.sink.size


def _malformed_is_422(step: Callable[[], T]) -> T:
    try:
        return step()
    except HTTPException:
        raise
    except Exception as error:
        raise HTTPException(422, f"malformed multipart body: {str(error)[:200]}") from error


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


class _ReadClock:
    """When the next chunk must have arrived: grace + received / min rate after the start, and never
    after the overall timeout."""

    def __init__(self, policy: UploadPolicy) -> None:
        self.policy = policy
        self.start = time.monotonic()

    def remaining_s(self, received: int) -> float:
        p = self.policy
        by_rate = p.grace_s + received / p.min_bytes_per_s
        return min(by_rate, p.timeout_s) - (time.monotonic() - self.start)

    def late(self, received: int) -> HTTPException:
        elapsed = time.monotonic() - self.start
        if elapsed >= self.policy.timeout_s:
            why = f"the upload took longer than {self.policy.timeout_s:g} s (upload_timeout_s)"
        else:
            why = (
                f"the upload is too slow: {received} bytes in {elapsed:.1f} s, below "
                f"{self.policy.min_bytes_per_s} bytes/s after {self.policy.grace_s:g} s "
                "(upload_min_bytes_per_s, upload_grace_s)"
            )
        return _closing(408, why)


async def _chunks(request: Request, gate: UploadGate) -> AsyncGenerator[bytes, None]:
    """The body's chunks, each awaited against the read deadline and the drain."""
    clock = _ReadClock(gate.policy)
    stop = asyncio.ensure_future(gate.stopped.wait())
    received = 0
    try:
        while True:
            timeout = clock.remaining_s(received)
            if timeout <= 0:
                raise clock.late(received)
            recv = asyncio.ensure_future(request.receive())
            done, _ = await asyncio.wait({recv, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                if stop in done:
                    raise _closing(503, "the service is shutting down", DRAIN_RETRY_AFTER_S)
                raise clock.late(received)
            message = recv.result()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            received += len(chunk)
            yield chunk
            if not message.get("more_body", False):
                return
    finally:
        stop.cancel()


async def _read_upload(request: Request, gate: UploadGate) -> tuple[IO[bytes], int]:
    """(the uploaded video positioned at 0, bytes held); raises HTTPException."""
    limit = gate.policy.max_bytes
    if request.headers.get("content-length") == "0":
        raise HTTPException(422, "the upload is empty")
    is_multipart, params = _content_type(request)
    body_limit = limit + MULTIPART_OVERHEAD if is_multipart else limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(limit)

    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    held = 0
    try:
        if is_multipart:
            body: _RawBody | _MultipartBody = _MultipartBody(out, limit, params.get(b"boundary"), gate.policy)
        else:
            body = _RawBody(out)
        received = 0
        async with aclosing(_chunks(request, gate)) as chunks:
            async for chunk in chunks:
                received += len(chunk)
                if received > body_limit:
                    raise _too_large(limit)
                if chunk:
                    gate.hold(len(chunk))
                    held += len(chunk)
                    body.write(chunk)
        if body.finish() == 0:
            raise HTTPException(422, "the upload is empty")
        out.seek(0)
        return out, held
    except ClientDisconnect as error:
        out.close()
        gate.spool_bytes -= held
        raise HTTPException(400, "the client disconnected before the upload was complete") from error
    except BaseException:
        out.close()
        gate.spool_bytes -= held
        raise
