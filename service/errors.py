"""Every domain error of the service and of the core, turned into an HTTP answer in one place.

The core's errors (:mod:`videocore.errors`) know nothing of HTTP; the engine and the pipeline raise
:class:`ServiceError` subclasses. :func:`install_exception_handlers` registers one handler per
family, so no route maps an error by hand. Every error body is ``{"detail": "<what was wrong>"}``.
"""

from __future__ import annotations

import json
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from videocore.errors import InputTooLargeError, NotAVideoError, VideoError

__all__ = [
    "InvalidOptionError",
    "ModelNotFoundError",
    "NotReadyError",
    "OverloadedError",
    "ServiceError",
    "format_validation_errors",
    "http_status",
    "install_exception_handlers",
]


class ServiceError(Exception):
    """A request the service refuses; ``status_code`` is its HTTP status, ``message`` says why."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class ModelNotFoundError(ServiceError, LookupError):
    """No such model name or version."""

    status_code = 404


class InvalidOptionError(ServiceError, ValueError):
    """The model exists but not with the options asked for, or an option is out of range."""

    status_code = 422


class NotReadyError(ServiceError):
    """Models are loading or the service is draining."""

    status_code = 503


class OverloadedError(ServiceError):
    """Every request slot (``max_queue``) is taken."""

    status_code = 503


def http_status(error: Exception) -> int:
    """The HTTP status a domain error is answered with."""
    if isinstance(error, ServiceError):
        return error.status_code
    if isinstance(error, InputTooLargeError):
        return 413
    if isinstance(error, NotAVideoError):
        return 415
    if isinstance(error, VideoError):
        return 422
    raise TypeError(f"{type(error).__name__} is not a domain error")


def format_validation_errors(errors: list[dict[str, object]]) -> str:
    """FastAPI's error list -> one readable sentence per problem."""
    parts = []
    for error in errors:
        loc = [str(x) for x in error.get("loc", ())]  # type: ignore[attr-defined]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:])
        text = f"{where} parameter {name!r}" if name else where
        message = f"{text}: {error.get('msg', 'invalid')}"
        if "input" in error and error.get("type") != "missing":
            message += f" (got {error['input']!r})"
        parts.append(message)
    return "; ".join(parts) or "invalid request"


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    headers = None
    if isinstance(exc, ServiceError) and exc.retry_after_s is not None:
        headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse({"detail": str(exc)}, status_code=http_status(exc), headers=headers)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": format_validation_errors(list(exc.errors()))}, status_code=422)


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(VideoError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
