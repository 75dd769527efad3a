"""Optional Bearer API key (``SDA_API_KEY``) for the model routes; probes stay open, and /metrics and
the API docs too unless ``SDA_PROTECT_OPS`` is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="SDA_API_KEY, when the service sets one")


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    expected = key.get_secret_value().encode("utf-8")
    # Header values reach us decoded as latin-1: encoding back gives the bytes as sent, so a key
    # with non-ASCII characters sent as UTF-8 matches.
    given = credentials.credentials.encode("latin-1", "replace") if credentials is not None else b""
    if credentials is None or not hmac.compare_digest(given, expected):
        detail = "missing API key" if credentials is None else "wrong API key"
        raise HTTPException(
            401, f"{detail}: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )


async def require_ops_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The key for /metrics, /docs, /redoc and /openapi.json, when ``protect_ops`` is set."""
    if request.app.state.settings.protect_ops:
        await require_api_key(request, credentials)
