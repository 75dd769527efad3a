"""Service settings: environment variables with the ``SDA_`` prefix (or a ``.env`` file).

Every field below is one variable, e.g. ``SDA_MODELS_DIR=/models SDA_MAX_BATCH_SIZE=8``. List values
(``providers``, ``cors_origins``) take a comma-separated string or a JSON list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDA_", env_file=".env", extra="ignore")

    models_dir: Path = Field(Path("models"), description="Model repository: <dir>/<name>/<version>/")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["auto"],
        description="'auto' (TensorRT/CUDA when ONNX Runtime has them, else CPU) or explicit providers",
    )
    require_gpu: bool = Field(False, description="Refuse to start when no graph runs on a GPU provider")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1, description="Largest accepted upload (413 above)")
    max_pixels: int = Field(3840 * 2160, ge=1, description="Largest width x height of a video")
    max_duration_s: float = Field(600.0, gt=0, description="Longest video duration")
    max_decoded_frames: int = Field(20_000, ge=1, description="Most frames decoded per video")
    decode_timeout_s: float = Field(30.0, gt=0, description="Wall-clock limit for decoding one video")
    decode_workers: int = Field(
        2,
        ge=1,
        description="Videos decoded at once. Decoding takes turns: every admitted request starts at once "
        "and the running ones hand the decoder over every few tens of milliseconds, so a small clip "
        "is not stuck behind large ones",
    )
    decode_budget_s: float = Field(
        10.0,
        gt=0,
        description="Decoder time (seconds of turns held) one request may use, from opening the file to "
        "the model's input and thumbnails; 422 beyond. decode_timeout_s bounds the wall time",
    )
    max_frame_pixels: int = Field(
        1024 * 1024,
        ge=1,
        description="Most pixels of one frame after the resize to the model's short side (422 beyond): "
        "bounds the memory of a decoded frame whatever the header says",
    )
    max_aspect_ratio: float = Field(
        8.0,
        ge=1,
        description="Largest long side / short side of a video (422 beyond); a 65535x48 canvas would "
        "otherwise be resized to a frame hundreds of thousands of pixels wide",
    )
    max_streams: int = Field(
        32,
        ge=1,
        description="Most streams FFmpeg reads from a container (the rest are ignored). It opens a "
        "decoder per stream while probing: an MKV of 1000 one-frame H.264 streams cost +776 MiB, "
        "+21 MiB with 32",
    )
    max_uploads: int = Field(
        128,
        ge=1,
        description="Uploads being received at once (their bodies not complete); more get 503 + "
        "Retry-After. Separate from max_queue: a slow upload holds no decode or inference slot. An "
        "upload in progress costs a socket and its spool (bounded by max_spool_bytes), so the default "
        "leaves room for normal clients beside dozens of slow ones until their read deadline ends them",
    )
    max_spool_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="Bytes of uploads held at once (being received, queued or decoding, memory and "
        "disk spool together); an upload that would pass it gets 503 + Retry-After",
    )
    upload_timeout_s: float = Field(
        300.0, gt=0, description="Longest time to receive one upload body; 408 (connection closed) after"
    )
    upload_min_bytes_per_s: int = Field(
        16 * 1024,
        ge=1,
        description="Slowest accepted average upload rate once upload_grace_s has passed: an upload "
        "must have sent (seconds since its headers - upload_grace_s) x this many bytes, else 408",
    )
    upload_grace_s: float = Field(
        5.0,
        gt=0,
        description="How long an upload may send nothing at first (also bounds 'Expect: 100-continue' "
        "with no body) before upload_min_bytes_per_s applies",
    )
    max_multipart_parts: int = Field(
        16, ge=1, description="Most parts in a multipart/form-data upload (422 beyond)"
    )
    max_multipart_header_bytes: int = Field(
        8 * 1024, ge=256, description="Most bytes of headers of one multipart part (422 beyond)"
    )
    decode_threads: int = Field(
        0,
        ge=0,
        description="FFmpeg threads inside one decode; 0: the CPUs divided among decode_workers (at "
        "least 1: on 2 CPUs with 2 workers each decode runs single-threaded)",
    )
    default_precision_cpu: Literal["fp32", "fp16", "int8"] = Field(
        "fp32",
        description="Precision served on the CPU provider when a request names none (and the model "
        "has that variant, with a passed accuracy check; else fp32)",
    )
    default_precision_gpu: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="Precision served on CUDA/TensorRT when a request names none (else fp32)"
    )
    max_batch_size: int = Field(8, ge=1, description="Most clips (rows) per inference batch")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits for more requests")
    max_queue: int = Field(16, ge=1, description="Requests in flight at once; more get 503 + Retry-After")
    max_clips: int = Field(4, ge=1, description="Largest accepted ?clips=")
    max_timeline_duration_s: float = Field(
        600.0,
        gt=0,
        description="Longest video POST /timeline accepts (422 beyond; max_duration_s applies too)",
    )
    max_timeline_windows: int = Field(
        1000, ge=1, description="Most windows one POST /timeline request may classify (422 beyond)"
    )
    timeline_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Wall-clock limit for one POST /timeline request after its upload (decoding and "
        "inference of every window); it also replaces decode_timeout_s and decode_budget_s for its decode",
    )
    thumbnail_height: int = Field(
        72, ge=8, le=512, description="Height in pixels of the JPEG thumbnails of ?thumbnails=true"
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads per session (0 = ORT)")
    shutdown_drain_s: float = Field(
        20.0,
        ge=0,
        description="On SIGTERM: answer new requests 503 + Retry-After, keep listening until every "
        "admitted request is answered or this many seconds pass, then shut down (0: no drain)",
    )
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve the Open Inference Protocol over gRPC on this port (off: unset)",
    )
    grpc_host: str = Field(
        "127.0.0.1", description="Address the gRPC server listens on (python -m service: --host)"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    api_key: SecretStr | None = Field(None, description="When set, model routes need 'Authorization: Bearer'")
    protect_ops: bool = Field(
        False,
        description="With api_key set, also require the key for /metrics, /docs, /redoc and "
        "/openapi.json (the probes /health, /ready, /v2/health/* stay open)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins; empty = CORS off"
    )
    default_model: str | None = Field(None, description="Model used when ?model= is absent")
    default_frames: int | None = Field(
        None,
        ge=1,
        description="Frames per clip when ?frames= is absent, for every model exported at that count "
        "(the others keep their own); unset: each model's default_frames (or its smallest)",
    )

    @field_validator("providers", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A key must fit in an HTTP header: printable, no spaces (compared as UTF-8 bytes)."""
        if value is not None and any(ch.isspace() or not ch.isprintable() for ch in value.get_secret_value()):
            raise ValueError("api_key must be printable characters without spaces (it is sent in a header)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key(cls, value: object) -> object:
        return None if value == "" else value
