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
    decode_workers: int = Field(2, ge=1, description="Threads decoding videos in parallel")
    max_batch_size: int = Field(8, ge=1, description="Most clips (rows) per inference batch")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="How long a batch waits for more requests")
    max_queue: int = Field(16, ge=1, description="Requests in flight at once; more get 503 + Retry-After")
    max_clips: int = Field(4, ge=1, description="Largest accepted ?clips=")
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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key(cls, value: object) -> object:
        return None if value == "" else value
