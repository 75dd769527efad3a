"""Response bodies (they also document the API in /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# FastAPI's ``responses=`` documentation of error statuses
Responses = dict[int | str, dict[str, Any]]


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, in words")


class ModelRef(BaseModel):
    name: str
    version: str
    frames: int
    provider: str = Field(description="Execution provider the graph really runs on (session.get_providers())")


class Prediction(BaseModel):
    index: int
    label: str
    score: float = Field(description="Softmax probability, averaged over clips x crops")


class BlockWeights(BaseModel):
    block: str
    weights: dict[str, float]


class StageWeights(BaseModel):
    stage: str
    weights: dict[str, float]


class DependencyWeights(BaseModel):
    branches: list[str]
    blocks: list[BlockWeights]
    stages: list[StageWeights]


class VideoSummary(BaseModel):
    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    frames: int
    rotation: int


class Sampled(BaseModel):
    indices: list[list[int]] = Field(description="Decoded frame numbers per clip")
    timestamps_s: list[list[float]] = Field(description="Presentation times per clip")


class Timings(BaseModel):
    upload: float = Field(0.0, description="Receiving the upload")
    decode_wait: float = Field(0.0, description="Waiting for a free decoder thread")
    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


class Thumbnails(BaseModel):
    format: str = Field(description="Always 'jpeg'")
    width: int = Field(description="Pixels; the frame's aspect ratio at `height`")
    height: int = Field(description="Pixels; the setting thumbnail_height (SDA_THUMBNAIL_HEIGHT)")
    clips: list[list[str]] = Field(
        description="Base64 JPEG files of the sampled frames (whole frames, before cropping), per clip"
    )
    encode_ms: float = Field(description="Time spent encoding them (not part of timings_ms)")


class ClassifyResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]
    dependency_weights: DependencyWeights
    video: VideoSummary
    sampled: Sampled
    timings_ms: Timings
    thumbnails: Thumbnails | None = Field(None, description="Only with ?thumbnails=true")


class ProvidersInfo(BaseModel):
    requested: list[str]
    active: list[str]
    available: list[str]
    fallback: bool = Field(description="An accelerator was asked for but a graph runs elsewhere")


class HealthResponse(BaseModel):
    status: str
    ready: bool
    provider: str | None
    providers: ProvidersInfo | None
    models: list[str]
    default_model: str | None
    in_flight: int
    max_queue: int


class ReadyResponse(BaseModel):
    ready: bool


class GraphInfo(BaseModel):
    frames: int
    input_size: int
    resize_short_side: int
    provider: str
    providers: list[str]
    fallback: bool
    warmup_ms: float
    path: str


class ModelInfo(BaseModel):
    name: str
    version: str
    default: bool
    default_frames: int = Field(description="Frames per clip when a request names none")
    labels: list[str]
    num_classes: int
    blocks: list[str]
    branches: list[str]
    architecture: dict[str, object]
    normalization: dict[str, object]
    sampling: str
    training_data: str
    source_checkpoint_sha256: str
    graphs: list[GraphInfo]
    manifest: dict[str, object]


class ModelsResponse(BaseModel):
    default_model: str | None
    models: list[ModelInfo]


class V2Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]
