"""Open Inference Protocol errors: every OIP route answers ``{"error": "<message>"}`` (the spec's
body, which tritonclient and the KServe SDK decode) instead of the service's ``{"detail": ...}``.

The mapping lives here once: :class:`OIPRoute` (the route class of every OIP router) turns whatever
a route raises -- domain errors (status from :func:`service.errors.http_status`), HTTP errors and
request validation errors -- into that body, with ``Retry-After`` where the error carries one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError, format_validation_errors, http_status
from videocore.errors import VideoError


class OIPRequestError(ServiceError):
    """A malformed inference request: bad JSON, a tensor of the wrong name, type or shape (400)."""

    status_code = 400


class NotSupportedError(ServiceError):
    """An OIP/Triton operation this server does not offer (repository load/unload, ...)."""

    status_code = 400


def oip_error_response(exc: Exception) -> JSONResponse:
    """``{"error": ...}`` with the status and headers the service's own handlers would give."""
    headers: dict[str, str] | None = None
    if isinstance(exc, ServiceError | VideoError):
        status = http_status(exc)
        message = str(exc)
        if isinstance(exc, ServiceError) and exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
    elif isinstance(exc, RequestValidationError):
        status = 400
        message = format_validation_errors(list(exc.errors()))
    else:
        raise TypeError(f"{type(exc).__name__} is not an OIP error")
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class OIPRoute(APIRoute):
    """An APIRoute whose errors are OIP error bodies (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oip_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (ServiceError, VideoError, StarletteHTTPException, RequestValidationError) as exc:
                return oip_error_response(exc)

        return oip_handler
