"""Open Inference Protocol errors: every OIP route answers ``{"error": "<message>"}`` (the spec's
body, which tritonclient and the KServe SDK decode) instead of the service's ``{"detail": ...}``.

The mapping lives here once: :class:`OIPRoute` (the route class of every OIP router) turns whatever
a route raises -- domain errors (status from :func:`service.errors.http_status`), HTTP errors and
request validation errors -- into that body, with ``Retry-After`` where the error carries one.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ServiceError, format_validation_errors, http_status
from videocore.errors import VideoError

log = logging.getLogger("sda_serve.oip")

OIP_PREFIX = "/v2"


class OIPErrorBody(BaseModel):
    error: str


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for OIP errors."""
    return {code: {"model": OIPErrorBody, "description": "OIP error"} for code in codes}


class OIPRequestError(ServiceError):
    """A malformed inference request: bad JSON, a tensor of the wrong name, type or shape (400)."""

    status_code = 400


class UnsupportedEncodingError(ServiceError):
    """A ``Content-Encoding`` other than identity, gzip or deflate (415, as HTTP says)."""

    status_code = 415


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
            except Exception:
                request_id = request.scope.get("state", {}).get("request_id", "?")
                log.exception(
                    "unhandled error in %s %s [request id %s]", request.method, request.url.path, request_id
                )
                return JSONResponse(
                    {"error": f"internal server error (request id {request_id})"}, status_code=500
                )

        return oip_handler


def install_oip_not_found(app: FastAPI) -> None:
    """Unknown ``/v2/...`` paths (404) and wrong methods (405) answer ``{"error": ...}`` too: they are
    raised by the router, before any OIP route, so the app's HTTP error handler is wrapped for them."""
    original = app.exception_handlers[StarletteHTTPException]

    async def handler(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
            return oip_error_response(exc)
        response = original(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response

    app.add_exception_handler(StarletteHTTPException, handler)
