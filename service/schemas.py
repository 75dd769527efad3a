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
    precision: str = Field(description="fp32, fp16 or int8: the graph variant that ran")
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


class DecodeWarningBody(BaseModel):
    kind: str = Field(
        description="frames_substituted (sampled frames that did not decode were replaced by a "
        "neighbouring frame), truncated (the file ended early; the frames read were used) or "
        "decode_order (no usable timestamps: frames numbered in decoding order)"
    )
    message: str = Field(description="What happened, in words")


class ClassifyResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction]
    dependency_weights: DependencyWeights
    video: VideoSummary
    sampled: Sampled
    timings_ms: Timings
    thumbnails: Thumbnails | None = Field(None, description="Only with ?thumbnails=true")
    warnings: list[DecodeWarningBody] = Field(
        default_factory=list,
        description="Always present; empty when the video decoded cleanly. Non-empty means the "
        "predictions were made on frames that are not exactly the ones asked for",
    )


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


class PrecisionCheckInfo(BaseModel):
    method: str = Field(description="parity (fp16), accuracy or agreement (int8): see export/quantize.py")
    passed: bool
    clips: int
    tolerance: float
    top1_agreement: float = Field(description="% of the check's clips whose top-1 equals the fp32 graph's")
    max_prob_diff: float
    top1: float | None
    fp32_top1: float | None


class GraphInfo(BaseModel):
    frames: int
    precision: str = Field(description="fp32, fp16 or int8")
    default_precision: bool = Field(description="Served when a request names no precision")
    precision_check: PrecisionCheckInfo | None = Field(
        description="The variant's accuracy check against fp32, from its metadata (None for fp32)"
    )
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
