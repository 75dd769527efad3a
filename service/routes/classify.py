"""POST /classify: the route wires the request's options to the classify pipeline."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from service.deps import Pipeline
from service.pipeline import ClassifyOptions
from service.routes.auth import require_api_key
from service.schemas import ClassifyResponse, ErrorBody, Responses
from service.upload import FILE_FIELD

router = APIRouter(tags=["classify"], dependencies=[Depends(require_api_key)])

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

_ERRORS: Responses = {
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
    pipeline: Pipeline,
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
    precision: str | None = Query(
        None,
        description="Graph precision: fp32, or fp16/int8 where the model has that variant (GET /models); "
        "default: the server's default_precision_cpu / default_precision_gpu for the provider, else fp32",
    ),
    thumbnails: bool = Query(
        False,
        description="Also return small JPEG thumbnails (base64) of the sampled frames, "
        "thumbnail_height pixels high, one per frame per clip",
    ),
) -> dict[str, object]:
    options = ClassifyOptions(frames, top_k, clips, crops, model, version, thumbnails, precision)
    return await pipeline.classify(request, options)
