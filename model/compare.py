"""The paper's Table 1 story at small scale: TSN, TSM, SDA-TSN (AVG and SEC) and SDA-TSM trained on
the same synthetic data with the same budget, then scored on the same fresh held-out clips.

``python -m model.compare --out runs/table1 [train options...]``

Every variant is trained by ``model.train`` with identical options (any option after ``--out`` is
passed through: ``--width``, ``--size``, ``--epochs``, ``--train-clips``, ``--optimizer`` ...), so
the only difference is the architecture. Each is then scored on ``--eval-clips`` fresh clips that
go through H.264 and the service's decode path (``model.evaluate``), reporting top-1 and the
reversed-pair accuracy: how often the true class of a clip of classes 0-9 beats its time-reversed
partner. A model blind to frame order (TSN) sits at 0.5 there. With ``--synthetic-plain`` the
models train and are scored on the plain renders (no nuisances): the temporal-order question alone,
for budgets too small to learn through the clutter. Finished variants are skipped on a
re-run, so an interrupted comparison resumes. Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.evaluate import evaluate_on_fresh_clips
from model.preprocess import normalize_frames
from model.train import TrainingError, parse_args, train
from videocore.contract import eval_resize_short_side

# (row name, architecture, extra train options): Table 1's rows, in its order.
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("TSN", "tsn_r50", ()),
    ("TSM", "tsm_r50", ()),
    ("SDA-TSN (AVG)", "sda_tsn_r50", ("--aggregation", "avg")),
    ("SDA-TSN (SEC)", "sda_tsn_r50", ("--aggregation", "sec")),
    ("SDA-TSM (SEC)", "sda_tsm_r50", ("--aggregation", "sec")),
)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def torch_predictor(model: torch.nn.Module):
    @torch.no_grad()
    def predict(frames: np.ndarray) -> np.ndarray:
        return model(normalize_frames(torch.from_numpy(frames))).softmax(dim=-1)[0].numpy()

    return predict


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | top-1 | reversed pairs (chance 0.5) | top-5 | parameters |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['top1']:.1%} | {row['reversed_pair_accuracy']:.1%} | "
            f"{row['top5']:.1%} | {row['parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def run_variant(
    args: argparse.Namespace,
    name: str,
    arch: str,
    extra: tuple[str, ...],
    train_options: list[str],
    size: int,
    frames: int,
) -> dict[str, Any]:
    """Train one row's model (or resume it, or reuse its finished result) and score it on fresh clips."""
    run = args.out / slug(name)
    result_path = run / "heldout.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    print(f"== {name}: training {arch} {' '.join(extra)}", flush=True)
    # A variant trained before an interruption resumes from its last epoch (or, when its training
    # had finished, goes straight to scoring).
    resume = ["--resume", str(run / "last.pt")] if (run / "last.pt").exists() else []
    train(
        parse_args(
            ["--dataset", "synthetic", "--arch", arch, *extra, *train_options, "--out", str(run), *resume]
        )
    )
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    train_seconds = sum(row["seconds"] for row in epochs)  # training epochs only, without validation
    model, _ = load_checkpoint(run / "last.pt")
    scores = evaluate_on_fresh_clips(
        torch_predictor(model),
        frames=frames,
        resize_short_side=eval_resize_short_side(size),
        input_size=size,
        clips=args.eval_clips,
        seed=args.eval_seed,
        render_short_side=160,
        plain="--synthetic-plain" in train_options,
    )
    row = {
        "name": name,
        "arch": arch,
        "options": [*extra, *train_options],
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        **scores,
    }
    result_path.write_text(json.dumps(row, indent=2) + "\n")
    print(
        f"== {name}: top-1 {row['top1']:.3f}, reversed pairs {row['reversed_pair_accuracy']:.3f}", flush=True
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-clips", type=int, default=360, help="fresh held-out clips per variant")
    parser.add_argument("--eval-seed", type=int, default=20261125, help="never used by the trainer")
    parser.add_argument("--only", nargs="*", help="row names to run (default: all)")
    args, train_options = parser.parse_known_args(argv)
    unknown = set(args.only or ()) - {name for name, _, _ in VARIANTS}
    if unknown:
        parser.error(f"--only: no such row {sorted(unknown)}; rows: {[name for name, _, _ in VARIANTS]}")
    if any(option in train_options for option in ("--arch", "--aggregation", "--dataset")):
        parser.error("--arch, --aggregation and --dataset are set per variant")
    size = int(train_options[train_options.index("--size") + 1]) if "--size" in train_options else 224
    frames = int(train_options[train_options.index("--frames") + 1]) if "--frames" in train_options else 8

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for name, arch, extra in VARIANTS:
            if not args.only or name in args.only:
                rows.append(run_variant(args, name, arch, extra, train_options, size, frames))
    except TrainingError as error:
        print(f"python -m model.compare: {error}", file=sys.stderr)
        return 1
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown_table(rows)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
