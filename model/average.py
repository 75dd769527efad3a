"""Average the weights of several checkpoints of one training run (or of a fine-tuning run and the
weights it started from).

``python -m model.average OUT IN [IN ...]``, e.g. the ``epoch*.pt`` that ``--keep-last-epochs 3`` left
after the last three epochs of a cosine schedule. Near the end of a schedule the weights wander around a
flat region; their mean sits nearer its centre and usually generalises a little better than any one of
them (stochastic weight averaging, Izmailov et al., 2018). BatchNorm running statistics are averaged
too: checkpoints a few hundred low-learning-rate steps apart have nearly the same ones.

The result is a weights-only checkpoint (no optimizer state) of the same architecture, labels and input
size, ready for ``python -m export`` or ``--init``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import read_checkpoint
from model.official import CheckpointMismatchError

TRAINING_STATE = ("optimizer", "scaler", "best_top1", "metrics")


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The mean of the floating-point tensors of ``paths`` (integer ones, BN's step counters, from the
    last file); every file must record the same architecture, labels, input size and tensor names."""
    if not paths:
        raise ValueError("no checkpoints to average")
    checkpoints = [read_checkpoint(path) for path in paths]
    first = checkpoints[0]
    for path, checkpoint in zip(paths[1:], checkpoints[1:], strict=True):
        for key in ("config", "labels", "input_size"):
            if checkpoint[key] != first[key]:
                raise CheckpointMismatchError(f"{path}: its {key} differs from {paths[0]}'s")
        if checkpoint["state_dict"].keys() != first["state_dict"].keys():
            raise CheckpointMismatchError(f"{path}: its tensors differ from {paths[0]}'s")
    last = checkpoints[-1]
    state_dict = {}
    for name, tensor in last["state_dict"].items():
        if tensor.is_floating_point():
            # Sum in float64: the mean of a few float32 tensors then rounds once.
            total = sum(checkpoint["state_dict"][name].double() for checkpoint in checkpoints)
            state_dict[name] = (total / len(checkpoints)).to(tensor.dtype)
        else:
            state_dict[name] = tensor.clone()
    epochs = [int(checkpoint.get("epoch", 0)) + 1 for checkpoint in checkpoints]
    descriptions = [str(checkpoint.get("training_data", "")) for checkpoint in checkpoints]
    if len(set(descriptions)) == 1:
        averaged = f"weights averaged over epochs {', '.join(map(str, epochs))}"
        training_data = f"{descriptions[0]}; {averaged}" if descriptions[0] else averaged
    else:
        # Checkpoints of different runs (e.g. a fine-tuning run and the weights it started from):
        # keep each one's own description rather than the last one's under the others' epoch numbers.
        parts = (
            f"[{description} (epoch {epoch})]"
            for description, epoch in zip(descriptions, epochs, strict=True)
        )
        training_data = f"mean of {len(checkpoints)} checkpoints: " + " + ".join(parts)
    return {
        **{key: value for key, value in last.items() if key not in TRAINING_STATE},
        "state_dict": state_dict,
        "training_data": training_data,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.average", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the averaged checkpoint to write")
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints of one run (sda-serve format)")
    args = parser.parse_args(argv)
    try:
        averaged = average_checkpoints(args.checkpoints)
    except (CheckpointMismatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, args.out)
    print(f"{args.out}: the mean of {len(args.checkpoints)} checkpoints ({averaged['training_data']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
