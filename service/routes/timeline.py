"""POST /timeline: the request's options -> :class:`service.timeline.TimelineRunner`; JSON, or NDJSON
streamed as windows are inferred (``Accept: application/x-ndjson``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.deps import Pipeline
from service.errors import ServiceError, http_status
from service.routes.auth import require_api_key
from service.routes.classify import _BODY_DOC, _ERRORS
from service.timeline import DEFAULT_WINDOW_S, TimelineOptions, TimelineRunner
from videocore.errors import VideoError
from videocore.timeline import DEFAULT_SMOOTH

router = APIRouter(tags=["timeline"], dependencies=[Depends(require_api_key)])

NDJSON = "application/x-ndjson"


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


async def _stream(events: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[bytes]:
    """One line per window, the summary last; an error after the first line is a last line
    ``{"error": {"status", "detail"}}``. Closing this (a client that went away) closes ``events``,
    which stops the decoding."""
    try:
        async for event in events:
            if event is not None:
                yield _line(event)
    except (VideoError, ServiceError) as error:
        yield _line({"error": {"status": http_status(error), "detail": str(error)}})
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.post(
    "/timeline",
    responses=_ERRORS,
    openapi_extra={
        **_BODY_DOC,
        "responses": {"200": {"content": {NDJSON: {"schema": {"type": "string"}}}}},
    },
    summary="Actions and dependency weights over time in an untrimmed video",
)
async def timeline(
    request: Request,
    pipeline: Pipeline,
    window_s: float | None = Query(
        None,
        description="Window length in seconds (>= 0.25); default: the model's training clip length "
        f"(architecture clip_seconds) when its metadata states one, else {DEFAULT_WINDOW_S:g} s",
    ),
    stride_s: float | None = Query(None, description="Seconds between window starts; default window_s / 2"),
    frames: int | None = Query(
        None, description="Frames per window: a frame count the model was exported for"
    ),
    top_k: int | None = Query(None, ge=1, description="Classes per window (default 5, or all if fewer)"),
    min_score: float = Query(0.0, ge=0.0, le=1.0, description="Drop segments whose confidence is lower"),
    smooth: int = Query(
        DEFAULT_SMOOTH, ge=1, description="Mode-filter width (odd, in windows) over the per-window top-1"
    ),
    model: str | None = Query(None, description="Model name (default: the default model)"),
    version: str | None = Query(None, description="Model version (default: the newest)"),
    precision: str | None = Query(None, description="Graph precision, as for /classify"),
) -> Any:
    options = TimelineOptions(window_s, stride_s, frames, top_k, model, version, min_score, smooth, precision)
    events = TimelineRunner(pipeline).events(request, options)
    await anext(events)  # upload, admission, probe: refusals here are plain HTTP errors
    if NDJSON in request.headers.get("accept", ""):
        return StreamingResponse(_stream(events), media_type=NDJSON)
    windows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    async for event in events:
        if event is not None and "window" in event:
            windows.append(event)
        elif event is not None:
            summary = event
    return JSONResponse({**summary, "windows": windows})
