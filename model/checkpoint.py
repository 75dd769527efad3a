"""Checkpoints written by our trainer: weights plus everything needed to rebuild and serve them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.network import ModelConfig, VideoClassifier
from model.official import CheckpointMismatchError, load_native_state_dict

CHECKPOINT_FORMAT = "sda-serve/1"


@dataclass
class CheckpointInfo:
    """What a checkpoint records besides its weights."""

    config: ModelConfig
    labels: list[str]
    input_size: int
    training_data: str = ""
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path, model: VideoClassifier, info: CheckpointInfo, **training_state: Any
) -> None:
    """Write atomically (temp file + rename) so an interrupted run never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "labels": list(info.labels),
        "input_size": info.input_size,
        "training_data": info.training_data,
        "epoch": info.epoch,
        "extra": info.extra,
        "state_dict": model.state_dict(),
        **training_state,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path}: not an sda-serve training checkpoint (for the authors' released files use --official)"
        )
    return checkpoint


def load_checkpoint(path: str | Path) -> tuple[VideoClassifier, CheckpointInfo]:
    """Rebuild the recorded architecture, load its weights strictly, return it in eval mode."""
    checkpoint = read_checkpoint(path)
    config = ModelConfig.from_dict(checkpoint["config"])
    labels = list(checkpoint["labels"])
    if len(labels) != config.num_classes:
        raise CheckpointMismatchError(
            f"{path}: {len(labels)} labels recorded for a model with {config.num_classes} classes"
        )
    model = VideoClassifier(config)
    load_native_state_dict(model, checkpoint["state_dict"], str(path))
    info = CheckpointInfo(
        config=config,
        labels=labels,
        input_size=int(checkpoint["input_size"]),
        training_data=str(checkpoint.get("training_data", "")),
        epoch=int(checkpoint.get("epoch", 0)),
        extra=dict(checkpoint.get("extra", {})),
    )
    return model.eval(), info
