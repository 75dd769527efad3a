"""/openapi.json, /docs and /redoc, behind the API key when ``protect_ops`` is set, under a CSP.

The pages are FastAPI's; their assets come from the jsDelivr CDN (no wheel in the serving
dependencies ships them), so the Content-Security-Policy names exactly those origins, allows each
page's inline script by its hash and nothing else, and forbids framing.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from service.routes.auth import require_ops_key

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_ops_key)])

OPENAPI_URL = "/openapi.json"
_CDN = "https://cdn.jsdelivr.net"
_FAVICON = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def _with_csp(page: HTMLResponse, extra: str = "") -> HTMLResponse:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body))
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN} 'unsafe-inline'{extra}; "
        f"img-src 'self' data: {_FAVICON} {_CDN}; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI")
    return _with_csp(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
    return _with_csp(page, " https://fonts.googleapis.com; font-src https://fonts.gstatic.com")
