"""Parameters and multiply-accumulates of a variant: ``python -m model.summary NAME --frames 8``.

MACs are counted the way the paper's numbers were (thop on the authors' code): convolutions and
linear layers by their products, BatchNorm as 2 per element, pooling by its window. Operations
outside modules (the means inside SDA, the head's spatial mean) are not counted, like thop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
from torch import Tensor, nn

from model.network import VARIANTS, VideoClassifier, build_model
from model.sda import DEFAULT_BRANCHES


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _module_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * (per_output + (1 if module.bias is not None else 0))
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 2 * inputs[0].numel()
    if isinstance(module, nn.MaxPool2d):
        return 0
    return 0


@torch.no_grad()
def count_macs(model: VideoClassifier, frames: int, size: int = 224) -> int:
    """MACs of one clip of ``frames`` frames at ``size`` x ``size``."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _module_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, frames, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def summarize(model: VideoClassifier, frames: int, size: int = 224) -> dict[str, object]:
    return {
        "name": model.config.name,
        "classes": model.num_classes,
        "frames": frames,
        "size": size,
        "branches": list(model.branch_names),
        "aggregation": model.config.aggregation if model.has_sda else None,
        "reduction": model.config.reduction if model.has_sda else None,
        "width": model.config.width,
        "params": count_parameters(model),
        "macs": count_macs(model, frames, size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.summary", description=__doc__)
    parser.add_argument("name", choices=sorted(VARIANTS))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=174)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--branches", nargs="+", default=list(DEFAULT_BRANCHES))
    parser.add_argument("--aggregation", choices=("sec", "avg"), default="sec")
    parser.add_argument("--reduction", type=int, default=4)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    model = build_model(
        args.name,
        args.classes,
        args.frames,
        branches=tuple(args.branches),
        aggregation=args.aggregation,
        reduction=args.reduction,
        width=args.width,
    )
    summary = summarize(model, args.frames, args.size)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:12s} {value}")
        print(f"{'':12s} {summary['params'] / 1e6:.2f}M params, {summary['macs'] / 1e9:.2f}G MACs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
