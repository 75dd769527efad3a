"""uint8 frames -> the model's normalised input. The exported graphs embed this same function, so
training, PyTorch evaluation and every runtime see identical numbers."""

from __future__ import annotations

import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(
    frames: Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    scale: float = 255.0,
) -> Tensor:
    """(N, T, H, W, 3) uint8 RGB -> (N, T, 3, H, W) float32, (x / scale - mean) / std."""
    std_tensor = torch.tensor(std, dtype=torch.float32, device=frames.device)
    mean_tensor = torch.tensor(mean, dtype=torch.float32, device=frames.device)
    # One multiply-add per pixel: x * 1/(scale*std) - mean/std.
    x = frames.to(torch.float32) * (1.0 / (scale * std_tensor)) - mean_tensor / std_tensor
    return x.permute(0, 1, 4, 2, 3)
