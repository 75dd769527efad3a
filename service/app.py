"""The FastAPI application: lifespan (engine + decode pool), error handling, request ids, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.config import Settings
from service.engine import Engine, StartupError
from service.errors import install_exception_handlers
from service.metrics import Metrics
from service.oip import grpc_server as oip_grpc
from service.oip import rest as oip_rest
from service.oip.errors import install_oip_not_found
from service.pipeline import ClassifyPipeline
from service.routes import classify, docs, info, timeline, web
from service.routes.auth import require_ops_key

log = logging.getLogger("sda_serve")

VERSION = "0.1.0"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "unmatched"


class RequestContextMiddleware:
    """Request id (``X-Request-ID``), request metrics, and the last line of defence: any exception a
    handler did not turn into a response is logged with the request id and answered with a JSON 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s [request id %s]", scope["method"], scope["path"], request_id
            )
            if not status["started"]:
                body = json.dumps({"detail": f"internal server error (request id {request_id})"}).encode()
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                        ],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            # Labels from fixed sets only: a client choosing the method or path cannot grow /metrics.
            route = scope.get("route")
            path = getattr(route, "path", None) or (
                "static" if scope["path"].startswith(web.STATIC_PREFIX + "/") else UNMATCHED_ROUTE
            )
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.request_latency.labels(path).observe(time.perf_counter() - started)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or type(error).__name__}: {error.filename}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, metrics)
        app.state.engine = engine
        # A thread per admitted request: they take turns at the decoder (service.fairshare), so a
        # request waits for a turn of a few tens of ms, not for whole decodes ahead of it.
        app.state.decode_pool = ThreadPoolExecutor(
            max(settings.decode_workers, settings.max_queue), thread_name_prefix="decode"
        )
        app.state.pipeline = ClassifyPipeline(engine, app.state.decode_pool)
        grpc_server = None
        try:
            await asyncio.to_thread(engine.load)
            if settings.grpc_port is not None:  # OIP gRPC on the same loop, engine and pipeline
                grpc_server = await oip_grpc.start(
                    app.state, VERSION, settings.grpc_host, settings.grpc_port, settings.max_upload_bytes
                )
        except (StartupError, OSError) as error:  # OSError: an unreadable repository or graph
            message = f"sda-serve cannot start: {_one_line(error)}"
            app.state.startup_error = message
            log.critical(message)
            print(message, file=sys.stderr, flush=True)
            engine.close()
            app.state.decode_pool.shutdown(wait=False)
            raise
        log.info(
            "ready: %d graph(s) of %s on %s",
            len(engine.graphs),
            ", ".join(engine.model_names),
            engine.active_providers,
        )
        try:
            yield
        finally:
            engine.ready = False
            if grpc_server is not None:
                await oip_grpc.stop(grpc_server)
            engine.close()
            app.state.decode_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="sda-serve",
        version=VERSION,
        description="Video action classification with SDA models (Tan et al., MM'21) on ONNX Runtime.",
        lifespan=lifespan,
        # served by service.routes.docs: behind the key with protect_ops, under a CSP
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics

    install_exception_handlers(app)
    app.include_router(classify.router)
    app.include_router(timeline.router)
    for router in oip_rest.routers:
        app.include_router(router)
    install_oip_not_found(app)  # unknown /v2/ paths answer {"error"}
    app.include_router(info.probes)
    app.include_router(info.ops, dependencies=[Depends(require_ops_key)] if settings.protect_ops else [])
    app.include_router(info.models)
    app.include_router(web.router)
    app.include_router(docs.router)
    app.mount(web.STATIC_PREFIX, web.static_files(), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
