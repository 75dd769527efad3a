"""POST /classify: bytes -> frames -> tensor -> engine -> response."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from export.metadata import PROBS
from service.engine import Engine, Graph, InvalidOptionError, ModelNotFoundError
from service.preprocess import dependency_summary, index_chooser, model_input, top_predictions
from service.routes.auth import require_api_key
from service.schemas import ClassifyResponse, ErrorBody
from service.thumbnails import jpeg_thumbnails
from service.upload import FILE_FIELD, read_upload
from service.video import VideoError, VideoLimits, probe_and_decode

router = APIRouter(tags=["classify"], dependencies=[Depends(require_api_key)])

RETRY_AFTER_S = 1
DEFAULT_TOP_K = 5

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": f"The video: multipart/form-data with a '{FILE_FIELD}' field, or the raw bytes.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "video/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "API key missing or wrong",
        404: "unknown model or version",
        413: "upload larger than max_upload_bytes",
        415: "not a video (or an unsupported content type)",
        422: "undecodable video, video over a limit, or invalid options",
        503: "overloaded (see Retry-After) or not ready",
    }.items()
}


@dataclass
class _Prepared:
    info: object
    indices: list[list[int]]
    timestamps_s: list[list[float]]
    batch: np.ndarray
    decode_ms: float
    preprocess_ms: float
    thumbnails: dict[str, object] | None


def _decode_and_prepare(
    upload, graph: Graph, clips: int, crops: int, limits: VideoLimits, thumbnail_height: int | None
) -> _Prepared:
    """Runs in the decode thread pool. ``thumbnail_height``: None for no thumbnails."""
    started = time.perf_counter()
    decoded = probe_and_decode(
        upload,
        index_chooser(graph.meta.frames, clips),
        limits,
        resize_short_side=graph.meta.resize_short_side,
    )
    decoded_at = time.perf_counter()
    batch = model_input(decoded.clips, graph.meta, crops)
    done = time.perf_counter()
    thumbnails = None
    if thumbnail_height is not None:
        made = jpeg_thumbnails(decoded.clips, thumbnail_height)
        thumbnails = {
            "format": "jpeg",
            "width": made.width,
            "height": made.height,
            "clips": made.clips,
            "encode_ms": round((time.perf_counter() - done) * 1000.0, 3),
        }
    return _Prepared(
        decoded.info,
        [list(map(int, idx)) for idx in decoded.indices],
        [[round(float(t), 6) for t in ts] for ts in decoded.timestamps_s],
        batch,
        (decoded_at - started) * 1000.0,
        (done - decoded_at) * 1000.0,
        thumbnails,
    )


def _video_summary(info) -> dict[str, object]:
    return {
        "container": str(info.container),
        "codec": str(info.codec),
        "width": int(info.width),
        "height": int(info.height),
        "fps": None if info.fps is None else float(info.fps),
        "duration_s": None if info.duration_s is None else float(info.duration_s),
        "frames": int(info.frames),
        "rotation": int(info.rotation or 0),
    }


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    response_model_exclude_unset=True,  # `thumbnails` appears only when asked for
    responses=_ERRORS,
    openapi_extra=_BODY_DOC,
    summary="Classify the action in a video clip",
)
async def classify(
    request: Request,
    frames: int | None = Query(
        None,
        description="Frames per clip: a frame count the model was exported for (8 or 16); default: the "
        "model's default_frames (GET /models)",
    ),
    top_k: int | None = Query(
        None,
        ge=1,
        description="How many classes to return, 1..number of classes (default 5, or all if fewer)",
    ),
    clips: int = Query(1, ge=1, description="Temporal clips averaged (TSN test offsets), 1..max_clips"),
    crops: int = Query(1, description="Spatial crops per clip: 1 (centre) or 3 (left/centre/right)"),
    model: str | None = Query(None, description="Model name (default: the default model)"),
    version: str | None = Query(None, description="Model version (default: the newest)"),
    thumbnails: bool = Query(
        False,
        description="Also return small JPEG thumbnails (base64) of the sampled frames, "
        "thumbnail_height pixels high, one per frame per clip",
    ),
) -> dict[str, object]:
    started = time.perf_counter()
    engine: Engine = request.app.state.engine
    settings = engine.settings
    metrics = engine.metrics
    if not engine.ready:
        raise HTTPException(
            503, "the service is not ready (models loading or shutting down)", {"Retry-After": "5"}
        )
    if crops not in (1, 3):
        raise HTTPException(422, f"crops must be 1 or 3, not {crops}")
    if clips > settings.max_clips:
        raise HTTPException(422, f"clips must be between 1 and {settings.max_clips}, not {clips}")
    try:
        graph = engine.resolve(model, version, frames)
    except ModelNotFoundError as error:
        raise HTTPException(404, str(error)) from error
    except InvalidOptionError as error:
        raise HTTPException(422, str(error)) from error
    if top_k is None:
        top_k = min(DEFAULT_TOP_K, graph.meta.num_classes)
    elif top_k > graph.meta.num_classes:
        raise HTTPException(
            422, f"top_k must be between 1 and {graph.meta.num_classes} for model {graph.name!r}"
        )

    if not engine.try_admit():
        metrics.rejected.inc()
        raise HTTPException(
            503,
            f"overloaded: {settings.max_queue} requests already in flight; retry after {RETRY_AFTER_S} s",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        upload = await read_upload(request, settings.max_upload_bytes)
        limits = VideoLimits(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            max_duration_s=settings.max_duration_s,
            max_decoded_frames=settings.max_decoded_frames,
            timeout_s=settings.decode_timeout_s,
        )
        try:
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(
                request.app.state.decode_pool,
                _decode_and_prepare,
                upload,
                graph,
                clips,
                crops,
                limits,
                settings.thumbnail_height if thumbnails else None,
            )
        except VideoError as error:
            metrics.decode_failures.labels(type(error).__name__).inc()
            raise HTTPException(error.status_code, str(error)) from error
        finally:
            upload.close()
        result = await engine.infer(graph, prepared.batch)
    finally:
        engine.release()

    timings = {
        "decode": prepared.decode_ms,
        "preprocess": prepared.preprocess_ms,
        "queue": result.queue_ms,
        "inference": result.inference_ms,
        "total": (time.perf_counter() - started) * 1000.0,
    }
    for stage, ms in timings.items():
        metrics.stage_latency.labels(stage).observe(ms / 1000.0)
    response: dict[str, object] = {
        "model": {
            "name": graph.name,
            "version": graph.version,
            "frames": graph.frames,
            "provider": graph.provider,
        },
        "predictions": top_predictions(result.outputs[PROBS], graph.meta.labels, top_k),
        "dependency_weights": dependency_summary(result.outputs, graph.meta),
        "video": _video_summary(prepared.info),
        "sampled": {"indices": prepared.indices, "timestamps_s": prepared.timestamps_s},
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }
    if prepared.thumbnails is not None:
        response["thumbnails"] = prepared.thumbnails
    return response
