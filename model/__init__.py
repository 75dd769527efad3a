"""SDA video models: build_model, load_official_checkpoint and the named variants."""

from model.network import VARIANTS, ModelConfig, VideoClassifier, build_model
from model.official import CheckpointMismatchError, load_official_checkpoint
from model.sda import BRANCH_NAMES, DEFAULT_BRANCHES, SDA

__all__ = [
    "BRANCH_NAMES",
    "DEFAULT_BRANCHES",
    "SDA",
    "VARIANTS",
    "CheckpointMismatchError",
    "ModelConfig",
    "VideoClassifier",
    "build_model",
    "load_official_checkpoint",
]
