"""The clip classifier (TSN wrapper: backbone, spatial mean, dropout, fc, mean over frames) and
its named variants."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from model.resnet import BlockOptions, ResNet
from model.sda import BRANCH_NAMES, DEFAULT_BRANCHES, Aggregation


@dataclass(frozen=True)
class Variant:
    """A named architecture: backbone depth, temporal shift, SDA."""

    depth: int
    shift: bool
    sda: bool


VARIANTS: dict[str, Variant] = {
    "tsn_r50": Variant(depth=50, shift=False, sda=False),
    "tsm_r50": Variant(depth=50, shift=True, sda=False),
    "sda_tsn_r50": Variant(depth=50, shift=False, sda=True),
    "sda_tsm_r50": Variant(depth=50, shift=True, sda=True),
    "tsn_r101": Variant(depth=101, shift=False, sda=False),
    "tsm_r101": Variant(depth=101, shift=True, sda=False),
    "sda_tsn_r101": Variant(depth=101, shift=False, sda=True),
    "sda_tsm_r101": Variant(depth=101, shift=True, sda=True),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints and ONNX metadata."""

    name: str
    num_classes: int
    num_frames: int
    branches: tuple[str, ...] = DEFAULT_BRANCHES
    aggregation: Aggregation = "sec"
    reduction: int = 4
    width: float = 1.0
    dropout: float = 0.5

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["branches"] = list(self.branches)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        fields = dict(data)
        fields["branches"] = tuple(fields.get("branches", DEFAULT_BRANCHES))  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


class VideoClassifier(nn.Module):
    """TSN-style clip classifier. Input (N, T, 3, H, W), normalised float; output logits (N, K)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.name not in VARIANTS:
            raise ValueError(f"unknown model {config.name!r}; choose from {', '.join(VARIANTS)}")
        unknown = [b for b in config.branches if b not in BRANCH_NAMES]
        if unknown:
            raise ValueError(f"unknown SDA branches {unknown}; choose from {', '.join(BRANCH_NAMES)}")
        if config.reduction < 1:
            raise ValueError(f"reduction must be >= 1, not {config.reduction}")
        if config.num_frames < 1 or config.num_classes < 1:
            raise ValueError("num_frames and num_classes must be positive")
        variant = VARIANTS[config.name]
        self.config = config
        self.num_frames = config.num_frames
        self.num_classes = config.num_classes
        self.backbone = ResNet(
            variant.depth,
            BlockOptions(
                shift=variant.shift,
                sda=variant.sda,
                branches=tuple(config.branches),
                aggregation=config.aggregation,
                reduction=config.reduction,
            ),
            width=config.width,
        )
        self.has_sda = variant.sda
        self.block_names: tuple[str, ...] = tuple(self.backbone.block_names)
        self.branch_names: tuple[str, ...] = tuple(config.branches) if variant.sda else ()
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.backbone.out_channels, config.num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.001)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, T, 3, H, W) -> feature maps (N, T, C, h, w) and SDA weights (N, B, M)."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"expected input of shape (N, T, 3, H, W), got {tuple(x.shape)}")
        num_frames = x.shape[1]
        features, weights = self.backbone(x.flatten(0, 1), num_frames)
        features = features.reshape(-1, num_frames, *features.shape[1:])
        if weights:
            stacked = torch.stack(weights, dim=1)
        else:
            stacked = features.new_zeros((features.shape[0], 0, len(self.branch_names)))
        return features, stacked

    def forward_head(self, features: Tensor) -> Tensor:
        """Spatial mean, dropout, fc per frame, then the mean over frames (TSN's consensus)."""
        pooled = features.mean(dim=(3, 4))  # (N, T, C)
        return self.fc(self.dropout(pooled)).mean(dim=1)

    def forward_with_dependencies(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (N, K) and the aggregation weights of every SDA block (N, B, M)."""
        features, weights = self.forward_features(x)
        return self.forward_head(features), weights

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_dependencies(x)[0]


def build_model(
    name: str,
    num_classes: int,
    num_frames: int,
    *,
    branches: tuple[str, ...] | list[str] = DEFAULT_BRANCHES,
    aggregation: Aggregation = "sec",
    reduction: int = 4,
    width: float = 1.0,
    dropout: float = 0.5,
) -> VideoClassifier:
    """Build a named variant (see ``VARIANTS``); SDA options are ignored by TSN/TSM."""
    return VideoClassifier(
        ModelConfig(
            name=name,
            num_classes=num_classes,
            num_frames=num_frames,
            branches=tuple(branches),
            aggregation=aggregation,
            reduction=reduction,
            width=width,
            dropout=dropout,
        )
    )
