"""Optional Bearer API key (``SDA_API_KEY``) for the model routes; probes and metrics stay open."""

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
    expected = key.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if credentials is None or not hmac.compare_digest(given, expected):
        detail = "missing API key" if credentials is None else "wrong API key"
        raise HTTPException(
            401, f"{detail}: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
