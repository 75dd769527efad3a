"""The authors' released SDA-TSM checkpoint layout (shared/reference TSV), filled with random tensors."""

from __future__ import annotations

from pathlib import Path

import torch

# The layout of the authors' released checkpoints, read off their code (copied from shared/reference/).
TSV = Path(__file__).resolve().parent / "data" / "official_sda_tsm_r50_state_dict.tsv"


def official_layout() -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    rows = []
    for line in TSV.read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((key, dims, getattr(torch, dtype)))
    return rows


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, dims, dtype in official_layout():
        if dtype == torch.int64:
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(dims, generator=generator) + 0.5
        else:
            state[key] = (torch.randn(dims, generator=generator) * 0.05).to(dtype)
    return state


def hand_mapped(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors renamed by hand, one rule per line, independently of model.official."""
    mapped = {}
    for key, tensor in official.items():
        if key.endswith(("total_ops", "total_params")):
            continue
        name = key[len("module.") :]
        name = name.replace("base_model.", "backbone.").replace("new_fc.", "fc.")
        name = name.replace("sda.channel_down.", "sda.reduce.").replace("sda.bn1.", "sda.reduce_bn.")
        name = name.replace("sda.channel_up.", "sda.expand.").replace("sda.bn2.", "sda.expand_bn.")
        name = name.replace("sda.mdm.", "sda.branches.")
        if name.endswith("sda.agg.qVec"):
            name, tensor = name.replace("sda.agg.qVec", "sda.query"), tensor[0]
        mapped[name] = tensor
    return mapped


def write_official_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A .pth.tar as the authors saved theirs: a dict with epoch, arch, state_dict, best_prec1."""
    state = random_official_state_dict(seed)
    torch.save({"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 61.8}, path)
    return state
