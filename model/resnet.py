"""ResNet-50/101 backbones for clips: TSN (frames independent), TSM (temporal shift), optional SDA.

Frames travel through the 2D backbone as a batch of N*T images; the temporal shift and SDA
regroup them into clips of ``num_frames``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.sda import SDA, Aggregation

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EXPANSION = 4


def temporal_shift(x: Tensor, num_frames: int, fold_div: int = 8) -> Tensor:
    """TSM shift on (N*T, C, H, W): channels [0, fold) take frame t+1, [fold, 2*fold) frame t-1.

    Clip ends are zero. Built from slices and cat, never in-place slice assignment, which the ONNX
    tracers record as constants and so silently exports a wrong graph.
    """
    frames = x.reshape(-1, num_frames, *x.shape[1:])  # (N, T, C, H, W)
    fold = frames.shape[2] // fold_div
    from_next = frames[:, 1:, :fold]
    from_previous = frames[:, :-1, fold : 2 * fold]
    zeros = torch.zeros_like(frames[:, :1, :fold])
    shifted = torch.cat(
        (
            torch.cat((from_next, zeros), dim=1),
            torch.cat((zeros, from_previous), dim=1),
            frames[:, :, 2 * fold :],
        ),
        dim=2,
    )
    return shifted.reshape(x.shape)


@dataclass(frozen=True)
class BlockOptions:
    """What distinguishes TSN, TSM and their SDA versions inside a bottleneck."""

    shift: bool
    sda: bool
    branches: tuple[str, ...]
    aggregation: Aggregation
    reduction: int


class Bottleneck(nn.Module):
    """conv1-bn1-relu -> conv2-bn2 -> [SDA] -> relu -> conv3-bn3 (+ residual) -> relu.

    With ``shift``, the TSM shift acts on the residual branch input only (before conv1); the
    downsample path sees the unshifted input.
    """

    def __init__(
        self, in_channels: int, width: int, stride: int, downsample: nn.Module | None, options: BlockOptions
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.shift = options.shift
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.sda = (
            SDA(width, options.branches, options.aggregation, options.reduction) if options.sda else None
        )
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor, num_frames: int) -> tuple[Tensor, Tensor | None]:
        identity = x if self.downsample is None else self.downsample(x)
        out = temporal_shift(x, num_frames) if self.shift else x
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        weights = None
        if self.sda is not None:
            clip = out.reshape(-1, num_frames, *out.shape[1:]).transpose(1, 2)  # (N, C, T, H, W)
            clip, weights = self.sda(clip)
            out = clip.transpose(1, 2).reshape(out.shape)
        out = self.relu(out)
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity), weights


def _round_channels(channels: float) -> int:
    """Width multiples of 8 (the TSM fold is C/8), at least 8."""
    return max(8, round(channels / 8) * 8)


class ResNet(nn.Module):
    """ResNet stem and four stages; ``forward`` returns features and the SDA weights per block."""

    def __init__(self, depth: int, options: BlockOptions, width: float = 1.0) -> None:
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(STAGE_DEPTHS)}, not {depth}")
        stem = _round_channels(64 * width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem
        self.block_names: list[str] = []
        for stage, blocks in enumerate(STAGE_DEPTHS[depth], start=1):
            stage_width = _round_channels(64 * width * 2 ** (stage - 1))
            stride = 1 if stage == 1 else 2
            layer = nn.ModuleList()
            for index in range(blocks):
                downsample = None
                if index == 0 and (stride != 1 or in_channels != stage_width * EXPANSION):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_channels, stage_width * EXPANSION, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(stage_width * EXPANSION),
                    )
                layer.append(
                    Bottleneck(in_channels, stage_width, stride if index == 0 else 1, downsample, options)
                )
                in_channels = stage_width * EXPANSION
                self.block_names.append(f"layer{stage}.{index}")
            self.add_module(f"layer{stage}", layer)
        self.out_channels = in_channels
        if not options.sda:
            self.block_names = []
        self._init_backbone()

    def _init_backbone(self) -> None:
        # torchvision's ResNet initialisation; SDA modules keep their own (set in SDA.__init__).
        for name, module in self.named_modules():
            if ".sda" in name:
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def stages(self) -> tuple[nn.ModuleList, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward(self, x: Tensor, num_frames: int) -> tuple[Tensor, list[Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        dependency_weights: list[Tensor] = []
        for stage in self.stages:
            for block in stage:
                x, weights = block(x, num_frames)
                if weights is not None:
                    dependency_weights.append(weights)
        return x, dependency_weights
