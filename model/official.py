"""Load checkpoints as the SDA authors released them (ty-97/SDA: TSN wrapper in nn.DataParallel).

Their keys look like ``module.base_model.layer1.0.sda.mdm.2.conv.weight``; ours like
``backbone.layer1.0.sda.branches.2.conv.weight``. The mapping is explicit and total: every tensor
of the file must land in the model, or loading fails naming the first key that does not fit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from model.network import VideoClassifier, build_model

# Leftover zero buffers from the authors' FLOP counter (thop); not part of the model.
_PROFILER_BUFFERS = ("total_ops", "total_params")

# Renames inside an SDA module, authors' name -> ours.
_SDA_RENAMES = (
    (re.compile(r"\.(?:sda|eft)\.channel_down\."), ".sda.reduce."),
    (re.compile(r"\.(?:sda|eft)\.bn1\."), ".sda.reduce_bn."),
    (re.compile(r"\.(?:sda|eft)\.channel_up\."), ".sda.expand."),
    (re.compile(r"\.(?:sda|eft)\.bn2\."), ".sda.expand_bn."),
    (re.compile(r"\.(?:sda|eft)\.mdm\.(\d+)\."), r".sda.branches.\1."),
    (re.compile(r"\.(?:sda|eft)\.agg\.qVec$"), ".sda.query"),
)


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the named architecture."""


def official_key_to_native(key: str) -> str | None:
    """Our parameter name for one of the authors' keys; None for keys that carry no weights."""
    if key.rsplit(".", 1)[-1] in _PROFILER_BUFFERS:
        return None
    key = key.removeprefix("module.")
    if key.startswith("base_model."):
        key = "backbone." + key.removeprefix("base_model.")
    elif key.startswith("new_fc."):
        key = "fc." + key.removeprefix("new_fc.")
    # TSM's original code wraps the shifted conv1 as ``conv1.net``.
    key = key.replace(".conv1.net.", ".conv1.")
    for pattern, replacement in _SDA_RENAMES:
        key = pattern.sub(replacement, key)
    return key


def official_state_dict_to_native(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the authors' tensors to ours (the query vector is stored as (1, r); ours is (r,))."""
    native: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        name = official_key_to_native(key)
        if name is None:
            continue
        if name.endswith(".sda.query"):
            tensor = tensor.reshape(-1)
        native[name] = tensor
    return native


def _shape(tensor: Tensor) -> str:
    return "x".join(str(d) for d in tensor.shape) or "scalar"


def load_native_state_dict(model: VideoClassifier, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load strictly: every model tensor present, every file tensor used, every shape equal."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise CheckpointMismatchError(
                f"{source}: missing key {key!r} (shape {_shape(tensor)}) for {model.config.name} "
                f"with {model.num_classes} classes"
            )
        if state_dict[key].shape != tensor.shape:
            raise CheckpointMismatchError(
                f"{source}: key {key!r} has shape {_shape(state_dict[key])} in the file but "
                f"{_shape(tensor)} in {model.config.name} with {model.num_classes} classes"
            )
    for key, tensor in state_dict.items():
        if key not in expected:
            raise CheckpointMismatchError(
                f"{source}: unexpected key {key!r} (shape {_shape(tensor)}) for {model.config.name}"
            )
    model.load_state_dict(state_dict, strict=True)


def read_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of an authors' ``.pth.tar`` (or a bare state dict)."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f"{path}: not a checkpoint (no state_dict mapping)")
    return dict(checkpoint)


def load_official_checkpoint(
    path: str | Path, name: str = "sda_tsm_r50", num_frames: int = 8
) -> VideoClassifier:
    """Build ``name`` with the file's class count and the authors' options (r_c 4, LST/LT/LS/S122,
    SEC), load every tensor, and return the model in eval mode.

    The released code treats a 16-frame clip as two 8-frame halves inside SDA; this model treats
    any ``num_frames`` as one clip, which is what the paper describes.
    """
    native = official_state_dict_to_native(read_official_state_dict(path))
    if "fc.weight" not in native:
        raise CheckpointMismatchError(f"{path}: no classifier weights (new_fc.weight) in the checkpoint")
    num_classes = native["fc.weight"].shape[0]
    model = build_model(name, num_classes, num_frames)
    load_native_state_dict(model, native, str(path))
    return model.eval()
