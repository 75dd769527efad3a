"""Selective Dependency Aggregation (Tan et al., ACM MM 2021, section 3).

Tensors inside the module use the video layout (N, r, T, H, W). Every branch follows the paper's
"feature-squeeze -> dependency-excitation" pipeline (Eqs. 2-4), with BatchNorm after each
excitation (paper section 4.2) and the squeezed map copied back to T x H x W.

Where the paper is vague, the module follows the authors' released code, because their released
checkpoints only reproduce with it (see ``load_official_checkpoint``).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Literal

import torch
from torch import Tensor, nn

BRANCH_NAMES = ("LST", "LT", "LS", "S122", "S144", "S222")
DEFAULT_BRANCHES = ("LST", "LT", "LS", "S122")
Aggregation = Literal["sec", "avg"]


@cache
def _adaptive_pool_rows(size_in: int, size_out: int) -> tuple[tuple[float, ...], ...]:
    """(size_out, size_in) matrix equal to 1-D adaptive average pooling from size_in to size_out.

    Row i averages [floor(i*in/out), ceil((i+1)*in/out)), which is PyTorch's (and the authors')
    adaptive pooling rule. It covers the non-divisible cases (7 -> 3 -> 7 at layer4) that ONNX has
    no adaptive-pooling op for, as a plain MatMul with a constant.
    """
    rows = []
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = math.ceil((i + 1) * size_in / size_out)
        rows.append(tuple(1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)))
    return tuple(rows)


def _adaptive_pool_matrix(size_in: int, size_out: int, like: Tensor) -> Tensor:
    # A fresh tensor per call: a cached tensor would leak tracer state out of torch.export.
    return torch.tensor(_adaptive_pool_rows(size_in, size_out), dtype=like.dtype, device=like.device)


def adaptive_avg_pool_hw(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """Adaptive average pooling over the last two axes, exported as two MatMuls."""
    h, w = x.shape[-2], x.shape[-1]
    if (h, w) == (out_h, out_w):
        return x
    pool_h = _adaptive_pool_matrix(h, out_h, x)
    pool_w = _adaptive_pool_matrix(w, out_w, x)
    return torch.matmul(torch.matmul(pool_h, x), pool_w.transpose(0, 1))


def adaptive_avg_pool_t(x: Tensor, out_t: int) -> Tensor:
    """Adaptive average pooling over the time axis of (N, C, T, H, W)."""
    t = x.shape[2]
    if t == out_t:
        return x
    pool_t = _adaptive_pool_matrix(t, out_t, x)
    return torch.einsum("ot,ncthw->ncohw", pool_t, x)


class LongRangeSpatioTemporal(nn.Module):
    """LST: squeeze T x H x W to one vector, excite with a linear layer (Conv 1x1x1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Linear(channels, channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> Tensor:
        squeezed = y.mean(dim=(2, 3, 4))  # (N, r)
        excited = self.relu(self.bn(self.conv(squeezed)))
        return excited[:, :, None, None, None]  # broadcasts over T, H, W


class LongRangeTemporal(nn.Module):
    """LT: squeeze T, excite the H x W map with a 3x3 spatial conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> Tensor:
        squeezed = y.mean(dim=2)  # (N, r, H, W)
        return self.relu(self.bn(self.conv(squeezed)))[:, :, None]  # broadcasts over T


class LongRangeSpatial(nn.Module):
    """LS: squeeze H x W, excite the T sequence with a temporal conv of size 3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> Tensor:
        squeezed = y.mean(dim=(3, 4))  # (N, r, T)
        return self.relu(self.bn(self.conv(squeezed)))[:, :, :, None, None]  # broadcasts over H, W


class ShortRange(nn.Module):
    """S122 / S144 / S222: local average pooling, excitation, then copy back to full size.

    Pooling follows the authors' adaptive rule: the pooled spatial size is max(H // k, 2), so on
    layer4's 7 x 7 map S122 pools to 3 x 3 with overlapping windows and un-pools to 7 x 7 by
    averaging the two neighbours in the middle; all of it is fixed matrices, exact and exportable.
    """

    def __init__(self, channels: int, pool_t: int, pool_hw: int, conv_t: int) -> None:
        super().__init__()
        self.pool_t = pool_t
        self.pool_hw = pool_hw
        self.conv = nn.Conv3d(
            channels, channels, kernel_size=(conv_t, 1, 1), padding=(conv_t // 2, 0, 0), bias=False
        )
        self.bn = nn.BatchNorm3d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, y: Tensor) -> Tensor:
        t, h, w = y.shape[2], y.shape[3], y.shape[4]
        out_t = max(t // self.pool_t, 1)
        out_h, out_w = max(h // self.pool_hw, 2), max(w // self.pool_hw, 2)
        pooled = adaptive_avg_pool_t(adaptive_avg_pool_hw(y, out_h, out_w), out_t)
        excited = self.relu(self.bn(self.conv(pooled)))
        return adaptive_avg_pool_t(adaptive_avg_pool_hw(excited, h, w), t)


def make_branch(name: str, channels: int) -> nn.Module:
    """One dependency branch by its paper name (Table 1)."""
    if name == "LST":
        return LongRangeSpatioTemporal(channels)
    if name == "LT":
        return LongRangeTemporal(channels)
    if name == "LS":
        return LongRangeSpatial(channels)
    if name == "S122":
        return ShortRange(channels, pool_t=1, pool_hw=2, conv_t=3)
    if name == "S144":
        return ShortRange(channels, pool_t=1, pool_hw=4, conv_t=3)
    if name == "S222":
        return ShortRange(channels, pool_t=2, pool_hw=2, conv_t=1)
    raise ValueError(f"unknown SDA branch {name!r}; choose from {', '.join(BRANCH_NAMES)}")


def reduced_channels(channels: int, reduction: int) -> int:
    """Channel width inside SDA: max(C / r_c, 16) (paper section 4.2)."""
    return max(channels // reduction, 16)


class SDA(nn.Module):
    """Multi-dependency modeling + dependency aggregation + sigmoid gate (Eqs. 1-8).

    ``forward`` takes (N, C, T, H, W) and returns the gated features and the aggregation weights
    (N, M): the QSA softmax for ``aggregation="sec"``, uniform 1/M for ``"avg"``.
    """

    def __init__(
        self,
        channels: int,
        branches: tuple[str, ...] = DEFAULT_BRANCHES,
        aggregation: Aggregation = "sec",
        reduction: int = 4,
    ) -> None:
        super().__init__()
        if not branches:
            raise ValueError("SDA needs at least one branch")
        if len(set(branches)) != len(branches):
            raise ValueError(f"duplicate SDA branches in {branches}")
        if aggregation not in ("sec", "avg"):
            raise ValueError(f"aggregation must be 'sec' or 'avg', not {aggregation!r}")
        width = reduced_channels(channels, reduction)
        self.branch_names = tuple(branches)
        self.aggregation = aggregation
        self.reduce = nn.Conv3d(channels, width, kernel_size=1, bias=False)
        self.reduce_bn = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.branches = nn.ModuleList(make_branch(name, width) for name in branches)
        # QSA's learnable query q (Eq. 6); AVG aggregation has no parameter.
        self.query = nn.Parameter(torch.empty(width)) if aggregation == "sec" else None
        self.expand = nn.Conv3d(width, channels, kernel_size=1, bias=False)
        self.expand_bn = nn.BatchNorm3d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation of the authors' released code, so a model trained from scratch starts where theirs
        did: Kaiming for the reduce and branch convs, Xavier for the expand conv, N(0, 0.001) for the
        long-range branch's conv."""
        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
        nn.init.xavier_normal_(self.expand.weight)
        for branch in self.branches:
            if isinstance(branch, LongRangeSpatioTemporal):
                nn.init.normal_(branch.conv.weight, 0.0, 0.001)
            else:
                nn.init.kaiming_normal_(branch.conv.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.query is not None:
            nn.init.uniform_(self.query, -0.1, 0.1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        full_shape = (x.shape[0], self.reduce.out_channels, x.shape[2], x.shape[3], x.shape[4])
        y = self.relu(self.reduce_bn(self.reduce(x)))
        # Each branch returns its map at the smallest shape that broadcasts to T x H x W.
        representations = [branch(y) for branch in self.branches]
        if self.query is None:
            count = len(representations)
            weights = x.new_full((x.shape[0], count), 1.0 / count)
        else:
            # QSA keys: the mean over T, H, W of each full-size representation. A broadcast map has
            # the same mean as its squeezed form, so only the short-range maps are ever full size.
            keys = torch.stack([r.mean(dim=(2, 3, 4)) for r in representations], dim=1)  # (N, M, r)
            scores = torch.matmul(keys, self.query)  # (N, M)
            weights = _qsa_softmax(scores)
        aggregated = representations[0] * weights[:, 0, None, None, None, None]
        for index in range(1, len(representations)):
            aggregated = aggregated + representations[index] * weights[:, index, None, None, None, None]
        aggregated = aggregated.expand(full_shape)
        gate = torch.sigmoid(self.expand_bn(self.expand(aggregated)))
        return x * gate, weights


def _qsa_softmax(scores: Tensor) -> Tensor:
    """exp(s) / (sum exp(s) + 1e-8), as the authors' code, computed without overflow.

    Subtracting the max m from every score scales numerator and denominator by exp(-m), so the
    1e-8 term becomes 1e-8 * exp(-m); the result equals the released code's wherever that is finite.
    """
    top = scores.max(dim=1, keepdim=True).values
    exp = torch.exp(scores - top)
    return exp / (exp.sum(dim=1, keepdim=True) + 1e-8 * torch.exp(-top))
