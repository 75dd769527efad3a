"""Train an SDA/TSM/TSN model with the paper's recipe: ``python -m model.train --dataset ... --out DIR``.

Defaults are the paper's (section 4.2 and the authors' code): SGD momentum 0.9, weight decay 1e-4
(none on BatchNorm and biases), lr 0.01 for TSN at 8 frames and 0.015 for TSM or 16 frames,
x0.1 at epochs 20 and 40 of 50, dropout 0.5, grad-norm clip 20, 5x lr on SDA weights, batch 36.
Multi-GPU / multi-node: launch with ``torchrun --nproc-per-node N -m model.train ...`` (DDP; NCCL on
GPUs, gloo on CPUs). Mixed precision on GPU. Checkpoints every epoch (``last.pt``, ``best.pt``;
``--keep-last-epochs N`` also keeps the weights after each of the last N as ``epoch<E>.pt``, for
``model.average``), ``--resume``; metrics to ``metrics.jsonl`` and ``curves.png``.
A recipe can live in a TOML file (``--config configs/<model>/<stage>.toml``: keys are the long option
names without ``--``); options given on the command line override the file's values.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import tomllib
from contextlib import nullcontext
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from model.checkpoint import CheckpointInfo, read_checkpoint, save_checkpoint
from model.data.datasets import (
    ClipDataset,
    SyntheticDataset,
    read_class_folders,
    read_diving48,
    read_frame_list,
    read_label_map,
    read_something_something_v2,
    read_video_list,
    ssv2_flip_pairs,
)
from model.data.transforms import CROP_REGIONS
from model.network import VARIANTS, VideoClassifier, build_model
from model.preprocess import normalize_frames
from model.sda import DEFAULT_BRANCHES

DATASETS = ("synthetic", "ssv2", "diving48", "video-list", "frame-list", "folders")
LIST_READERS = {"diving48": read_diving48, "video-list": read_video_list, "frame-list": read_frame_list}


class TrainingError(Exception):
    """A run that cannot start or go on: options that do not fit together, a config file with an unknown
    key or a value of the wrong kind, an ``--init`` checkpoint of another architecture, a diverged loss.
    ``main`` prints the message and exits with status 1; library callers catch it."""


def default_lr(name: str, frames: int) -> float:
    """0.01 for TSN-based 8-frame models; 0.015 for TSM-based or 16-frame ones (paper 4.2)."""
    return 0.015 if VARIANTS[name].shift or frames >= 16 else 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file of options (keys: the long option names without '--', e.g. configs/sda-tsm-synthetic/"
        "stage-l.toml); options on the command line override it",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="synthetic")
    data.add_argument("--root", type=Path, help="dataset root (ssv2, folders) or the videos/frames root")
    data.add_argument("--train-list", type=Path, help="train list / annotation file")
    data.add_argument("--val-list", type=Path, help="validation list / annotation file")
    data.add_argument("--labels", type=Path, help="label map, one class per line (lists, diving48)")
    data.add_argument("--image-template", default="{:05d}.jpg", help="frame file names (frame-list)")
    data.add_argument("--flip-pairs", default="auto", help="'auto', 'none', or JSON {class: mirror class}")
    data.add_argument("--train-clips", type=int, default=6000, help="synthetic clips per epoch")
    data.add_argument("--val-clips", type=int, default=600, help="synthetic validation clips")
    data.add_argument(
        "--easy-epochs",
        type=int,
        default=0,
        help="synthetic curriculum: plain renders fade out over N epochs",
    )
    data.add_argument(
        "--synthetic-plain",
        action="store_true",
        help="synthetic: plain renders only (grey background, solid objects, no nuisances), training and "
        "validation; isolates the temporal-order question for small-budget comparisons",
    )
    data.add_argument(
        "--synthetic-oversample",
        nargs="+",
        default=[],
        metavar="CLASS=FACTOR",
        help="synthetic training: draw these classes FACTOR times as often (e.g. 6=2 7=2 for the turning "
        "pair); validation stays balanced. The model's prior shifts by log(FACTOR) for those classes",
    )
    data.add_argument(
        "--train-crop",
        choices=CROP_REGIONS,
        default="full",
        help="where training crops come from: the whole frame (the paper's) or its centred square, the field "
        "of view that test-time centre cropping keeps (for data framed there, like the synthetic set)",
    )
    data.add_argument("--workers", type=int, default=2)
    arch = parser.add_argument_group("model")
    arch.add_argument("--arch", choices=sorted(VARIANTS), default="sda_tsm_r50")
    arch.add_argument("--frames", type=int, default=8)
    arch.add_argument(
        "--mixed-frames",
        type=int,
        default=0,
        metavar="T",
        help="also fit T-frame clips (T a multiple of --frames; e.g. 16 for one set of weights served at 8 "
        "and 16 frames): training clips are sampled at T segments and a share --mixed-share of the batches "
        "is trained at T; the others keep every (T / frames)-th frame from a random phase, i.e. one frame "
        "in each of --frames segments (validation stays at --frames; not in the paper)",
    )
    arch.add_argument("--mixed-share", type=float, default=0.5, help="share of --mixed-frames batches")
    arch.add_argument("--size", type=int, default=224, help="input crop size")
    arch.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    arch.add_argument("--branches", nargs="+", default=list(DEFAULT_BRANCHES))
    arch.add_argument("--aggregation", choices=("sec", "avg"), default="sec")
    arch.add_argument("--reduction", type=int, default=4, help="SDA channel reduction r_c")
    arch.add_argument("--dropout", type=float, default=0.5)
    arch.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start every bottleneck's last BN at zero (helps training from scratch; not in the paper, "
        "whose backbones start from ImageNet weights)",
    )
    optim = parser.add_argument_group("optimisation (paper defaults)")
    optim.add_argument("--epochs", type=int, default=50)
    optim.add_argument("--batch-size", type=int, default=36, help="total over all processes")
    optim.add_argument("--lr", type=float, help="default 0.01 (TSN 8f) or 0.015 (TSM, 16f)")
    optim.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="sgd (the paper's); adamw converges faster from scratch (not in the paper)",
    )
    optim.add_argument(
        "--schedule",
        choices=("step", "cosine"),
        default="step",
        help="step: x0.1 at --lr-steps (the paper's); cosine: half-cosine to 0 over --epochs",
    )
    optim.add_argument("--lr-steps", type=int, nargs="*", default=[20, 40])
    optim.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up (not in the paper)")
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--weight-decay", type=float, default=1e-4)
    optim.add_argument("--sda-lr-mult", type=float, default=5.0)
    optim.add_argument("--clip-grad", type=float, default=20.0)
    optim.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps (smoke runs)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-clips", type=int, default=1, help="clips per video (paper: 2)")
    evaluation.add_argument("--eval-crops", type=int, default=1, choices=(1, 3), help="crops (paper: 3)")
    evaluation.add_argument("--eval-every", type=int, default=1)
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--resume", type=Path, help="a last.pt to continue from")
    run.add_argument(
        "--init",
        type=Path,
        help="start from the weights of this sda-serve checkpoint (fine-tuning, e.g. an 8-frame model at "
        "16 frames or on another dataset): tensors whose name and shape match are loaded, the rest (a "
        "classifier for other classes) keeps its initialisation; optimizer, schedule and epochs start fresh",
    )
    run.add_argument(
        "--keep-last-epochs",
        type=int,
        default=0,
        help="also keep the weights after each of the last N epochs as epoch<E>.pt (for model.average)",
    )
    run.add_argument(
        "--stop-after-epoch",
        type=int,
        default=0,
        metavar="E",
        help="end the run after epoch E of --epochs, the schedule still planned over --epochs (a stage "
        "stopped early on purpose; 0: run every epoch)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    run.add_argument("--no-progress", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path)
    path = config.parse_known_args(argv)[0].config
    # The file's values go first, as if typed before the command line's flags, which therefore win;
    # argparse checks their types and choices like those of any flag.
    return parser.parse_args([*config_arguments(parser, read_config(path)), *argv] if path else argv)


def read_config(path: Path) -> dict[str, Any]:
    """The options of a TOML recipe file, e.g. ``configs/sda-tsm-synthetic/stage-l.toml``."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise TrainingError(f"--config {path}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise TrainingError(f"--config {path}: not valid TOML: {error}") from error


def config_arguments(parser: argparse.ArgumentParser, config: dict[str, Any]) -> list[str]:
    """The command-line arguments that set ``config``'s options: key ``mixed-share = 0.5`` is
    ``--mixed-share=0.5``, a list is an option's several values, ``true`` sets a switch (``false`` leaves
    it off). A key that is no option of ``parser`` is an error that names it."""
    actions = {
        option[2:]: action
        for action in parser._actions  # argparse offers no public list of its options
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--config")
    }
    arguments: list[str] = []
    for key, value in config.items():
        action = actions.get(key)
        if action is None:
            close = get_close_matches(key.replace("_", "-"), actions, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TrainingError(f"config: unknown key {key!r}{hint}; keys are option names without '--'")
        arguments += _option_arguments(key, action, value)
    return arguments


def _option_arguments(key: str, action: argparse.Action, value: Any) -> list[str]:
    flag = f"--{key}"
    if action.nargs == 0:  # a switch: store_true
        if not isinstance(value, bool):
            raise TrainingError(f"config: {key} is a switch, true or false, not {value!r}")
        return [flag] if value else []
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            raise TrainingError(f"config: {key} takes a list, e.g. {key} = [...], not {value!r}")
        return [flag, *(str(item) for item in value)]
    if isinstance(value, (list, dict)):
        raise TrainingError(f"config: {key} takes one value, not {value!r}")
    return [f"{flag}={value}"]


# --------------------------------------------------------------------------- data


def parse_oversample(items: list[str]) -> dict[int, float]:
    """``["6=2", "7=2"]`` -> ``{6: 2.0, 7: 2.0}``."""
    factors = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            label, factor = int(key), float(value)
        except ValueError:
            label, factor = -1, 0.0
        if not 0 <= label < len(SyntheticDataset.labels) or not factor > 0:
            raise TrainingError(
                f"--synthetic-oversample wants CLASS=FACTOR (class 0-11, factor > 0), not {item!r}"
            )
        factors[label] = factor
    return factors


def build_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, list[str], dict[int, int] | None]:
    if args.dataset == "synthetic":
        return _synthetic_datasets(args)
    train_records, val_records, labels, flips = _read_records(args)
    if args.flip_pairs == "none":
        flips = None
    elif args.flip_pairs != "auto":
        flips = {int(k): int(v) for k, v in json.loads(args.flip_pairs).items()}
    common = {"num_frames": args.frames, "input_size": args.size}
    train_frames = {"num_frames": max(args.frames, args.mixed_frames), "input_size": args.size}
    evaluation = {"clips": args.eval_clips, "crops": args.eval_crops}
    options = {"flip_pairs": flips, "image_template": args.image_template, "seed": args.seed}
    train = ClipDataset(train_records, train=True, crop_region=args.train_crop, **train_frames, **options)
    val = ClipDataset(val_records, train=False, **common, **evaluation, **options)
    return train, val, labels, flips


def _synthetic_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset, list[str], dict[int, int]]:
    train = SyntheticDataset(
        args.train_clips,
        train=True,
        seed=args.seed,
        easy_epochs=args.easy_epochs,
        plain=args.synthetic_plain,
        oversample=parse_oversample(args.synthetic_oversample),
        crop_region=args.train_crop,
        num_frames=max(args.frames, args.mixed_frames),
        input_size=args.size,
    )
    val = SyntheticDataset(
        args.val_clips,
        train=False,
        seed=args.seed + 1_000_003,
        plain=args.synthetic_plain,
        num_frames=args.frames,
        input_size=args.size,
        clips=args.eval_clips,
        crops=args.eval_crops,
    )
    return train, val, list(SyntheticDataset.labels), dict(SyntheticDataset.flip_pairs)


def _read_records(args: argparse.Namespace) -> tuple[list, list, list[str], dict[int, int]]:
    """Train and validation records, the labels and the dataset's own flip pairs (``--flip-pairs auto``)."""
    if args.dataset == "ssv2":
        train_records, labels = read_something_something_v2(args.root, "train")
        val_records, _ = read_something_something_v2(args.root, "validation")
        return train_records, val_records, labels, ssv2_flip_pairs(labels)
    if args.dataset == "folders":
        train_records, labels = read_class_folders(Path(args.root) / "train")
        val_records, _ = read_class_folders(Path(args.root) / "val")
        return train_records, val_records, labels, {}
    if not (args.train_list and args.val_list and args.labels):
        raise TrainingError(f"--dataset {args.dataset} needs --train-list, --val-list and --labels")
    read = LIST_READERS[args.dataset]
    root = args.root or Path(".")
    return read(args.train_list, root), read(args.val_list, root), read_label_map(args.labels), {}


# --------------------------------------------------------------------------- optimisation


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, sda_mult: float
) -> list[dict[str, Any]]:
    """Four groups: {backbone, SDA} x {decayed weights, BN/bias without decay}; SDA at sda_mult x lr."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (s, d): [] for s in (False, True) for d in (False, True)
    }
    for name, parameter in model.named_parameters():
        in_sda = ".sda." in name
        decay = parameter.ndim > 1  # conv/linear weights; BN affine, biases and the QSA query: no decay
        groups[(in_sda, decay)].append(parameter)
    return [
        {
            "params": params,
            "lr": lr * (sda_mult if in_sda else 1.0),
            "weight_decay": weight_decay if decay else 0.0,
            "name": f"{'sda' if in_sda else 'backbone'}-{'decay' if decay else 'no_decay'}",
        }
        for (in_sda, decay), params in groups.items()
        if params
    ]


def learning_rate_factor(
    epoch: float, steps: list[int], warmup: float, schedule: str = "step", epochs: int = 0
) -> float:
    """The lr multiplier at a (fractional) epoch: the paper's x0.1 steps, or a half-cosine from 1 to 0
    over ``epochs``; both behind an optional linear warm-up."""
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch / max(epochs, 1), 1.0)))
    else:
        factor = 0.1 ** sum(epoch >= step for step in steps)
    if warmup > 0 and epoch < warmup:
        factor *= (epoch + 1e-3) / warmup
    return factor


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: VideoClassifier, loader: DataLoader, device: torch.device, num_classes: int
) -> dict[str, Any]:
    """Top-1/top-5 with probabilities averaged over every view (clips x crops), the confusion matrix."""
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    top5_hits, loss_sum, count = 0, 0.0, 0
    for views, labels in loader:
        batch, num_views = views.shape[:2]
        inputs = normalize_frames(views.flatten(0, 1).to(device, non_blocking=True))
        logits = model(inputs).float().reshape(batch, num_views, -1)
        probs = logits.softmax(dim=-1).mean(dim=1)
        labels = labels.to(device)
        loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item()
        top5 = probs.topk(min(5, num_classes), dim=1).indices
        top5_hits += (top5 == labels[:, None]).any(dim=1).sum().item()
        for truth, guess in zip(labels.tolist(), top5[:, 0].tolist(), strict=True):
            confusion[truth, guess] += 1
        count += batch
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "top1": float(confusion.diagonal().sum() / max(count, 1)),
        "top5": top5_hits / max(count, 1),
        "loss": loss_sum / max(count, 1),
        "per_class_top1": per_class.tolist(),
        "confusion": confusion.tolist(),
        "count": count,
    }


def plot_curves(metrics_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric, title in zip(axes, ("loss", "top1"), ("loss", "top-1"), strict=True):
        for split in ("train", "val"):
            key = f"{split}_{metric}"
            points = [(row["epoch"], row[key]) for row in rows if key in row]
            if points:
                axis.plot(*zip(*points, strict=True), label=f"{split} {title}")
        axis.set_xlabel("epoch")
        axis.legend()
    axes[1].set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


# --------------------------------------------------------------------------- training


def init_from_checkpoint(model: nn.Module, path: Path) -> tuple[int, list[str]]:
    """Copy every tensor of checkpoint ``path`` whose name and shape match ``model``'s; return how many
    were copied and the names of the model's tensors left as built."""
    source = read_checkpoint(path)["state_dict"]
    target = model.state_dict()
    matching = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    found, total = sum(v.numel() for v in matching.values()), sum(v.numel() for v in target.values())
    if found < total / 2:  # a new classifier loses a few percent of the numbers, not half of them
        raise TrainingError(
            f"--init {path}: tensors matching this model hold only {found / total:.0%} of its numbers "
            "(another architecture or width?)"
        )
    model.load_state_dict(matching, strict=False)
    return len(matching), sorted(set(target) - set(matching))


def _setup_distributed() -> tuple[bool, int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # Rank 0 evaluates alone while the others wait at a barrier: a long validation (SSv2 has
        # 25k clips) must not hit the default 30-minute collective timeout.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=6))
        rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return True, rank, world, device
    return False, 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def frames_for_batch(
    views: torch.Tensor, frames: int, rng: np.random.Generator, share: float
) -> torch.Tensor:
    """``views`` (N, T, ...) sampled at T segments, trained whole with probability ``share``; otherwise
    every (T / frames)-th frame from a random phase: one frame in each of ``frames`` equal segments."""
    total = views.shape[1]
    if total == frames or rng.random() < share:
        return views
    stride = total // frames
    return views[:, int(rng.integers(stride)) :: stride]


@dataclass
class Run:
    """Everything one training run holds between its steps (built by ``prepare``)."""

    args: argparse.Namespace
    distributed: bool
    rank: int
    world: int
    device: torch.device
    model: VideoClassifier
    network: nn.Module  # ``model``, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    scaler: torch.amp.GradScaler
    train_set: Dataset
    val_loader: DataLoader
    sampler: DistributedSampler | None
    labels: list[str]
    info: CheckpointInfo
    start_epoch: int = 0
    best: float = -1.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"

    @property
    def per_process(self) -> int:
        return max(1, self.args.batch_size // self.world)

    def loader_options(self) -> dict[str, Any]:
        return {"num_workers": self.args.workers, "pin_memory": self.use_amp, "persistent_workers": False}


def check_options(args: argparse.Namespace) -> None:
    if args.mixed_frames and (args.mixed_frames <= args.frames or args.mixed_frames % args.frames):
        raise TrainingError(
            f"--mixed-frames must be a multiple of --frames above it, not {args.mixed_frames}"
        )


def build_network(args: argparse.Namespace, num_classes: int, verbose: bool) -> VideoClassifier:
    """The model as the options describe it, with ``--zero-init-residual`` and ``--init`` applied."""
    model = build_model(
        args.arch,
        num_classes,
        args.frames,
        branches=tuple(args.branches),
        aggregation=args.aggregation,
        reduction=args.reduction,
        width=args.width,
        dropout=args.dropout,
    )
    if args.zero_init_residual:
        for stage in model.backbone.stages:
            for block in stage:
                nn.init.zeros_(block.bn3.weight)
    if args.init and not args.resume:
        loaded, skipped = init_from_checkpoint(model, args.init)
        if verbose:
            names = ", ".join(skipped[:4]) + (", ..." if len(skipped) > 4 else "")
            kept = f"{len(skipped)} kept as built ({names})" if skipped else "none kept"
            print(f"initialised {loaded} tensors from {args.init}; {kept}", flush=True)
    return model


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> tuple[torch.optim.Optimizer, list[float]]:
    """The optimizer over ``parameter_groups`` and each group's peak lr (the schedule scales them)."""
    lr = args.lr if args.lr is not None else default_lr(args.arch, args.frames)
    groups = parameter_groups(model, lr, args.weight_decay, args.sda_lr_mult)
    optimizer: torch.optim.Optimizer
    if args.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=args.momentum)
    return optimizer, [group["lr"] for group in optimizer.param_groups]


def resume(run: Run) -> None:
    """Continue from ``--resume``: weights, optimizer and scaler state, the next epoch, the best top-1."""
    state = read_checkpoint(run.args.resume)
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.use_amp and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch, run.best = int(state["epoch"]) + 1, float(state.get("best_top1", -1.0))
    if run.is_main:
        print(f"resumed from {run.args.resume} at epoch {run.start_epoch}", flush=True)


def prepare(args: argparse.Namespace) -> Run:
    """Step 1: processes, data, model, optimizer (resumed if asked), the output folder and its
    ``args.json`` and ``labels.txt``."""
    check_options(args)
    distributed, rank, world, device = _setup_distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set, val_set, labels, _ = build_datasets(args)
    model = build_network(args, len(labels), verbose=rank == 0).to(device)
    optimizer, base_lrs = build_optimizer(model, args)
    run = Run(
        args=args,
        distributed=distributed,
        rank=rank,
        world=world,
        device=device,
        model=model,
        network=model,
        optimizer=optimizer,
        base_lrs=base_lrs,
        scaler=torch.amp.GradScaler("cuda", enabled=device.type == "cuda"),
        train_set=train_set,
        val_loader=None,  # type: ignore[arg-type]  # set below, once the batch size per process is known
        sampler=DistributedSampler(train_set, shuffle=True, seed=args.seed) if distributed else None,
        labels=labels,
        info=CheckpointInfo(
            config=model.config, labels=labels, input_size=args.size, training_data=_describe_data(args)
        ),
    )
    if args.resume:
        resume(run)
    if distributed:
        run.network = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    run.val_loader = DataLoader(val_set, batch_size=run.per_process, shuffle=False, **run.loader_options())
    args.out.mkdir(parents=True, exist_ok=True)
    if run.is_main:
        (args.out / "args.json").write_text(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2)
        )
        (args.out / "labels.txt").write_text("\n".join(labels) + "\n")
    return run


def train_step(run: Run, views: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator) -> tuple:
    """One optimizer step on one batch (the lr already set); returns the loss, the logits and the
    gradient norm before clipping."""
    args = run.args
    clips = frames_for_batch(views[:, 0], args.frames, rng, args.mixed_share)
    inputs = normalize_frames(clips.to(run.device, non_blocking=True))
    with torch.autocast("cuda", dtype=torch.float16) if run.use_amp else nullcontext():
        logits = run.network(inputs)
        loss = F.cross_entropy(logits.float(), targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    grad_norm = nn.utils.clip_grad_norm_(run.model.parameters(), args.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss, logits, grad_norm


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """Step 2: one epoch over fresh training clips; returns its metrics row (lr, loss, top-1, speed).
    A loss that is not finite is a ``TrainingError``."""
    args = run.args
    run.train_set.set_epoch(epoch)  # fresh crops/frames (and synthetic clips) every epoch
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    frames_rng = np.random.default_rng([args.seed, epoch, run.rank])
    loader = DataLoader(
        run.train_set,
        batch_size=run.per_process,
        sampler=run.sampler,
        shuffle=run.sampler is None,
        drop_last=True,
        generator=generator if run.sampler is None else None,
        **run.loader_options(),
    )
    steps = len(loader) if not args.max_steps else min(args.max_steps, len(loader))
    run.network.train()
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch + 1}/{args.epochs}",
        disable=not run.is_main or args.no_progress,
        dynamic_ncols=True,
    )
    for step, (views, targets) in enumerate(loader):
        if step >= steps:
            break
        factor = learning_rate_factor(
            epoch + step / steps, args.lr_steps, args.warmup_epochs, args.schedule, args.epochs
        )
        for group, base in zip(run.optimizer.param_groups, run.base_lrs, strict=True):
            group["lr"] = base * factor
        targets = targets.to(run.device, non_blocking=True)
        loss, logits, grad_norm = train_step(run, views, targets, frames_rng)
        seen += len(targets)
        loss_sum += loss.item() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum().item()
        bar.set_postfix(
            loss=f"{loss_sum / seen:.3f}",
            acc=f"{correct / seen:.3f}",
            clips_s=f"{seen * run.world / (time.perf_counter() - started):.1f}",
            lr=f"{run.base_lrs[0] * factor:.4g}",
            gnorm=f"{float(grad_norm):.1f}",
        )
        bar.update()
    bar.close()
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": run.base_lrs[0]
        * learning_rate_factor(epoch, args.lr_steps, args.warmup_epochs, args.schedule, args.epochs),
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "train_clips_per_s": seen * run.world / (time.perf_counter() - started),
        "seconds": time.perf_counter() - started,
    }
    if not math.isfinite(row["train_loss"]):
        raise TrainingError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']})")
    return row


def evaluate_and_checkpoint(run: Run, epoch: int, row: dict[str, Any], last: bool) -> dict[str, Any] | None:
    """Step 3 (rank 0): validation when due (``--eval-every``, and after the ``last`` epoch), the metrics
    row, the curves, ``last.pt``, ``best.pt`` and ``epoch<E>.pt``; returns the scores when it evaluated."""
    args, result = run.args, None
    if (epoch + 1) % args.eval_every == 0 or last:
        scores = evaluate(run.model, run.val_loader, run.device, len(run.labels))
        row.update({"val_top1": scores["top1"], "val_top5": scores["top5"], "val_loss": scores["loss"]})
        result = {**scores, "epoch": epoch + 1}
        (args.out / "eval.json").write_text(json.dumps(result) + "\n")
        print(
            f"epoch {epoch + 1}: val top-1 {scores['top1']:.3f} top-5 {scores['top5']:.3f} "
            f"({scores['count']} clips)",
            flush=True,
        )
    metrics_path = args.out / "metrics.jsonl"
    with metrics_path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    plot_curves(metrics_path, args.out / "curves.png")
    run.info.epoch = epoch
    top1 = row.get("val_top1", -1.0)
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "best_top1": max(run.best, top1),
        "metrics": row,
    }
    save_checkpoint(args.out / "last.pt", run.model, run.info, **state)
    if top1 > run.best:
        run.best = top1
        save_checkpoint(args.out / "best.pt", run.model, run.info, **state)
    if epoch >= args.epochs - args.keep_last_epochs:
        save_checkpoint(args.out / f"epoch{epoch + 1}.pt", run.model, run.info, metrics=row)
    return result


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train as ``args`` (from ``parse_args``) say; returns the last validation's scores. Raises
    ``TrainingError`` for options that do not fit together, an unusable ``--init`` or a diverged loss."""
    run = prepare(args)
    stop = min(args.epochs, args.stop_after_epoch) if args.stop_after_epoch else args.epochs
    result: dict[str, Any] = {}
    for epoch in range(run.start_epoch, stop):
        row = train_epoch(run, epoch)
        if run.is_main:
            result = evaluate_and_checkpoint(run, epoch, row, last=epoch + 1 == stop) or result
        if run.distributed:
            dist.barrier()
    if run.distributed:
        dist.destroy_process_group()
    return result


def _describe_data(args: argparse.Namespace) -> str:
    if args.dataset == "synthetic":
        return (
            f"synthetic temporal-reasoning set (model.data.synthetic), {args.train_clips} fresh clips "
            f"per epoch, seed {args.seed}{', plain renders only' if args.synthetic_plain else ''}"
        )
    return f"{args.dataset}: {args.root or ''} {args.train_list or ''}".strip()


def main(argv: list[str] | None = None) -> int:
    """The command line: a ``TrainingError`` becomes its message on stderr and exit status 1."""
    try:
        train(parse_args(argv))
    except TrainingError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
