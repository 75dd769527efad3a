"""GET /: the web page (plain HTML, CSS and JavaScript under service/static/, no build step, no CDN).

The page calls the same public API as any client (/models, /classify?thumbnails=true), so it needs
no route of its own beyond the files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_PREFIX = "/static"

# Everything the page loads comes from this origin; thumbnails arrive as data: URLs. Bar widths and
# heatmap colours are set through the CSSOM (element.style), which style-src 'self' allows.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
