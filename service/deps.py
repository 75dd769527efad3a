"""Typed FastAPI dependencies: the engine and the classify pipeline built by the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.engine import Engine
from service.errors import NotReadyError
from service.pipeline import ClassifyPipeline

NOT_READY_RETRY_AFTER_S = 5


def ready_engine(request: Request) -> Engine:
    """The engine, or 503 while models load or the service drains."""
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready:
        raise NotReadyError(
            "not ready: models are loading or the service is shutting down", NOT_READY_RETRY_AFTER_S
        )
    return engine


def classify_pipeline(request: Request) -> ClassifyPipeline:
    pipeline: ClassifyPipeline = request.app.state.pipeline
    return pipeline


ReadyEngine = Annotated[Engine, Depends(ready_engine)]
Pipeline = Annotated[ClassifyPipeline, Depends(classify_pipeline)]
