"""Probes, model metadata and Prometheus metrics (the Open Inference Protocol routes: service/oip)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import ReadyEngine
from service.engine import Engine, Graph
from service.repository import version_key
from service.routes.auth import require_api_key
from service.schemas import (
    ErrorBody,
    HealthResponse,
    ModelsResponse,
    ReadyResponse,
    Responses,
)

NOT_READY: Responses = {503: {"model": ErrorBody, "description": "not ready"}}
UNKNOWN_MODEL: Responses = {404: {"model": ErrorBody, "description": "unknown model or version"}}

probes = APIRouter(tags=["health"])
# /metrics: open, or behind the API key with protect_ops (the app adds require_ops_key then, so the
# schema documents a key only where one is asked for)
ops = APIRouter(tags=["health"])
models = APIRouter(
    tags=["models"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorBody, "description": "API key missing or wrong"}, **NOT_READY},
)


def _engine(request: Request) -> Engine | None:
    return getattr(request.app.state, "engine", None)


@probes.get("/health", response_model=HealthResponse, summary="Liveness, execution provider and models")
async def health(request: Request) -> dict[str, object]:
    engine = _engine(request)
    if engine is None or not engine.graphs:
        return {
            "status": "starting",
            "ready": False,
            "provider": None,
            "providers": None,
            "models": [],
            "default_model": None,
            "in_flight": 0,
            "max_queue": request.app.state.settings.max_queue,
        }
    summary = engine.providers_summary()
    active = engine.active_providers
    return {
        "status": "ok",
        "ready": engine.ready,
        "provider": active[0] if len(active) == 1 else ",".join(active),
        "providers": summary,
        "models": engine.model_names,
        "default_model": engine.default_model,
        "in_flight": engine.inflight,
        "max_queue": engine.settings.max_queue,
    }


@probes.get("/ready", response_model=ReadyResponse, responses=NOT_READY, summary="Readiness (after warm-up)")
async def ready(engine: ReadyEngine) -> dict[str, bool]:
    return {"ready": True}


@ops.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    # Rendered in a thread: a scrape never stalls the event loop (and so /health) however large.
    body = await asyncio.to_thread(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _grouped(engine: Engine) -> dict[tuple[str, str], list[Graph]]:
    groups: dict[tuple[str, str], list[Graph]] = defaultdict(list)
    for graph in engine.graphs.values():
        groups[(graph.name, graph.version)].append(graph)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], version_key(kv[0][1]))))


# Facts about the export machine (library versions, timings): nothing a client needs.
PRIVATE_MANIFEST_KEYS = frozenset({"exported_with", "export_seconds"})


def _relative(engine: Engine, graph: Graph) -> str:
    """The graph's path inside the model repository: the server's directories are not shown."""
    try:
        return graph.file.path.resolve().relative_to(engine.settings.models_dir.resolve()).as_posix()
    except ValueError:
        return f"{graph.name}/{graph.version}/{graph.file.path.name}"


def _check_info(graph: Graph) -> dict[str, object] | None:
    check = graph.meta.precision_check
    return None if check is None else dict(check.__dict__)


def _model_info(engine: Engine, graphs: list[Graph]) -> dict[str, object]:
    first = graphs[0]
    meta = first.meta
    return {
        "name": first.name,
        "version": first.version,
        "default": first.name == engine.default_model,
        "default_frames": engine.default_frames(first.name, first.version),
        "labels": list(meta.labels),
        "num_classes": meta.num_classes,
        "blocks": list(meta.blocks),
        "branches": list(meta.branches),
        "architecture": dict(meta.architecture),
        "normalization": {
            "mean": list(meta.mean),
            "std": list(meta.std),
            "scale": meta.scale,
            "color": meta.color,
        },
        "sampling": meta.sampling,
        "training_data": meta.training_data,
        "source_checkpoint_sha256": meta.source_checkpoint_sha256,
        "graphs": [
            {
                "frames": g.frames,
                "precision": g.precision,
                "default_precision": engine.default_precision(g) == g.precision,
                "precision_check": _check_info(g),
                "input_size": g.meta.input_size,
                "resize_short_side": g.meta.resize_short_side,
                "provider": g.provider,
                "providers": g.providers,
                "fallback": g.fallback,
                "warmup_ms": round(g.warmup_ms, 3),
                "path": _relative(engine, g),
            }
            for g in engine.graphs_of(first.name, first.version)
        ],
        "manifest": {k: v for k, v in first.file.manifest.items() if k not in PRIVATE_MANIFEST_KEYS},
    }


@models.get("/models", response_model=ModelsResponse, responses=NOT_READY, summary="Served models and labels")
async def list_models(engine: ReadyEngine) -> dict[str, object]:
    return {
        "default_model": engine.default_model,
        "models": [_model_info(engine, graphs) for graphs in _grouped(engine).values()],
    }


# Load balancers and uptime checkers probe with HEAD: the same answers, no body, not in the schema.
for _path, _probe in (("/health", health), ("/ready", ready)):
    probes.add_api_route(_path, _probe, methods=["HEAD"], include_in_schema=False)
