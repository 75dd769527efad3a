"""The Open Inference Protocol v2 over REST (with Triton's extensions), on the service's own port.

Health and server metadata are open like /health; model routes need the API key like /classify.
Every error is ``{"error": "..."}`` (:class:`service.oip.errors.OIPRoute`), including unknown
``/v2/...`` paths.
"""

from __future__ import annotations

import inspect
import json
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response

from service.deps import Pipeline, ReadyEngine
from service.engine import Engine
from service.oip import infer as oip_infer
from service.oip import models as oip_models
from service.oip.errors import (
    NotSupportedError,
    OIPRequestError,
    OIPRoute,
    UnsupportedEncodingError,
    documented,
)
from service.oip.tensors import HEADER_LENGTH, binary_outputs, encode_rest, parse_rest
from service.pipeline import ClassifyPipeline
from service.routes.auth import require_api_key
from service.upload import _too_large

SERVER_NAME = "sda-serve"
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "statistics",
    "model_repository",
]
HEADER_ALLOWANCE = 1024 * 1024  # the JSON header of a request, on top of max_upload_bytes

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

probes = APIRouter(tags=["oip"], route_class=OIPRoute, responses=documented(503))
models = APIRouter(
    tags=["oip"],
    route_class=OIPRoute,
    dependencies=[Depends(require_api_key)],
    responses=documented(400, 401, 404, 503),
)


# --- health and server metadata -------------------------------------------------------------------
@probes.get("/v2/health/live", summary="OIP v2 liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@probes.get("/v2/health/ready", summary="OIP v2 readiness (503 while loading or draining)")
async def ready(engine: ReadyEngine) -> dict[str, bool]:
    return {"ready": True}


# Load balancers probe with HEAD too: the same answers, no body, not in the schema.
for _path, _probe in (("/v2/health/live", live), ("/v2/health/ready", ready)):
    probes.add_api_route(_path, _probe, methods=["HEAD"], include_in_schema=False)


@probes.get("/v2", summary="OIP v2 server metadata")
async def server_metadata(request: Request) -> dict[str, object]:
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


# --- models (the stats and index routes come before /v2/models/{name}) ---------------------------
def _execution_count(engine: Engine, labels: list[str]) -> int:
    total = 0
    for metric in engine.metrics.batch_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("model") in labels:
                total += int(sample.value)
    return total


def _stats_entry(engine: Engine, pipeline: ClassifyPipeline, model: oip_models.OIPModel) -> dict[str, Any]:
    g = model.graph
    graphs = [g] if model.alias else engine.graphs_of(g.name, g.version)
    keys = [(x.name, x.version, x.frames) for x in graphs]
    labels = [f"{x.name}/{x.version}/{x.frames}f" for x in graphs]
    return pipeline.stats.entry(keys, model.name, g.version, _execution_count(engine, labels))


def statistics(
    engine: Engine, pipeline: ClassifyPipeline, name: str | None, version: str | None
) -> dict[str, Any]:
    """Triton's statistics of one model, or (``name`` None) of every model at every version."""
    if name:
        return {"model_stats": [_stats_entry(engine, pipeline, oip_models.resolve(engine, name, version))]}
    entries = []
    for item in oip_models.repository_index(engine):
        model = oip_models.resolve(engine, item["name"], item["version"])
        entries.append(_stats_entry(engine, pipeline, model))
    return {"model_stats": entries}


@models.get("/v2/models/stats", summary="Triton statistics of every model")
async def all_stats(engine: ReadyEngine, pipeline: Pipeline) -> dict[str, object]:
    return statistics(engine, pipeline, None, None)


@models.post("/v2/repository/index", summary="Triton repository index")
async def repository_index(request: Request, engine: ReadyEngine) -> list[dict[str, str]]:
    body = await request.body()
    ready_only = False
    if body.strip():
        try:
            ready_only = bool(json.loads(body).get("ready", False))
        except (ValueError, AttributeError) as error:
            raise OIPRequestError(f"the index request is not a JSON object: {error}") from error
    return oip_models.repository_index(engine, ready_only)


@models.post("/v2/repository/models/{name}/load", summary="Not supported (the repository is fixed)")
@models.post("/v2/repository/models/{name}/unload", summary="Not supported (the repository is fixed)")
async def load_unload(name: str) -> None:
    raise NotSupportedError("explicit model load / unload is not allowed: the repository is loaded at start")


def _without_version(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` less its ``version`` parameter (for the unversioned path)."""
    signature = inspect.signature(endpoint)

    async def unversioned(**kwargs: Any) -> Any:
        return await endpoint(**kwargs, version=None)

    unversioned.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name != "version"]
    )
    unversioned.__name__ = endpoint.__name__
    unversioned.__doc__ = endpoint.__doc__
    return unversioned  # type: ignore[return-value]


def _route_pair(path: str, method: str = "GET", **kwargs: Any) -> Callable[[Endpoint], Endpoint]:
    """Register one endpoint at ``/v2/models/{name}<path>`` and ``.../versions/{version}<path>``."""

    def register(endpoint: Endpoint) -> Endpoint:
        models.add_api_route(
            f"/v2/models/{{name}}{path}", _without_version(endpoint), methods=[method], **kwargs
        )
        models.add_api_route(
            f"/v2/models/{{name}}/versions/{{version}}{path}", endpoint, methods=[method], **kwargs
        )
        return endpoint

    return register


@_route_pair("/ready", summary="OIP v2 model readiness")
async def model_ready(name: str, engine: ReadyEngine, version: str | None = None) -> dict[str, object]:
    model = oip_models.resolve(engine, name, version)
    return {"name": name, "version": model.version, "ready": True}


@_route_pair("/config", summary="Triton model configuration (JSON)")
async def model_config(name: str, engine: ReadyEngine, version: str | None = None) -> dict[str, object]:
    return oip_models.config(engine, oip_models.resolve(engine, name, version))


@_route_pair("/stats", summary="Triton model statistics")
async def model_stats(
    name: str, engine: ReadyEngine, pipeline: Pipeline, version: str | None = None
) -> dict[str, object]:
    return statistics(engine, pipeline, name, version)


@_route_pair("", summary="OIP v2 model metadata")
async def model_metadata(name: str, engine: ReadyEngine, version: str | None = None) -> dict[str, object]:
    return oip_models.metadata(engine, oip_models.resolve(engine, name, version), version)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise UnsupportedEncodingError(
            f"unsupported content encoding {encoding!r} (identity, gzip or deflate)"
        )
    inflate = None if encoding == "identity" else zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    chunks, size = [], 0
    async for chunk in request.stream():
        if inflate is not None and chunk:
            try:
                chunk = inflate.decompress(chunk, limit + 1 - size)
            except zlib.error as error:
                raise OIPRequestError(f"the {encoding} body is corrupt: {error}") from error
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@_route_pair(
    "/infer",
    method="POST",
    summary="OIP v2 inference (JSON or binary tensors)",
    responses=documented(413, 415, 422),
)
async def model_infer(
    name: str, request: Request, engine: ReadyEngine, pipeline: Pipeline, version: str | None = None
) -> Response:
    model = oip_models.resolve(engine, name, version)
    body = await _read_body(request, pipeline.settings.max_upload_bytes + HEADER_ALLOWANCE)
    parsed = parse_rest(body, request.headers.get(HEADER_LENGTH))
    result = await oip_infer.infer(pipeline, model, parsed)
    content, header_length = encode_rest(result, binary_outputs(parsed, [t.name for t in result.outputs]))
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)}
    )


routers = [probes, models]
