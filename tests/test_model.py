"""The model library: shapes, the shift, S122's pooling, the paper's sizes, the authors' checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from authors_checkpoint import hand_mapped, official_layout, write_official_checkpoint

from model import VARIANTS, CheckpointMismatchError, build_model, load_official_checkpoint
from model.resnet import temporal_shift
from model.sda import SDA, ShortRange
from model.summary import count_macs, count_parameters
from model.summary import main as summary_main

TINY = {"width": 0.125}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("frames", [8, 16])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_forward(name: str, frames: int) -> None:
    model = build_model(name, num_classes=5, num_frames=frames, **TINY).eval()
    clip = torch.randn(2, frames, 3, 64, 64)
    with torch.no_grad():
        logits, weights = model.forward_with_dependencies(clip)
        plain = model(clip)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(plain, logits)
    depth = VARIANTS[name].depth
    blocks = {50: 16, 101: 33}[depth] if VARIANTS[name].sda else 0
    assert weights.shape == (2, blocks, len(model.branch_names))
    assert len(model.block_names) == blocks
    if blocks:
        assert model.block_names[0] == "layer1.0" and model.block_names[-1] == "layer4.2"
        assert model.branch_names == ("LST", "LT", "LS", "S122")
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, blocks))
        assert (weights > 0).all()


def test_training_step_updates_every_sda_parameter() -> None:
    model = build_model("sda_tsm_r50", 3, 8, **TINY).train()
    model(torch.randn(2, 8, 3, 64, 64)).logsumexp(dim=1).sum().backward()
    for name, parameter in model.named_parameters():
        if ".sda." in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("branches", [("S144",), ("S222",), ("LST", "LT", "LS", "S122", "S144", "S222")])
def test_other_branches_run(branches: tuple[str, ...]) -> None:
    model = build_model("sda_tsn_r50", 4, 8, branches=branches, **TINY).eval()
    with torch.no_grad():
        logits, weights = model.forward_with_dependencies(torch.randn(1, 8, 3, 64, 64))
    assert torch.isfinite(logits).all() and weights.shape == (1, 16, len(branches))


def test_avg_aggregation_gives_uniform_weights() -> None:
    model = build_model("sda_tsn_r50", 4, 8, aggregation="avg", **TINY).eval()
    with torch.no_grad():
        _, weights = model.forward_with_dependencies(torch.randn(1, 8, 3, 64, 64))
    torch.testing.assert_close(weights, torch.full((1, 16, 4), 0.25))
    assert not any("query" in name for name, _ in model.named_parameters())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet18", 3, 8)
    with pytest.raises(ValueError, match="unknown SDA branches"):
        build_model("sda_tsm_r50", 3, 8, branches=("LST", "XYZ"))
    with pytest.raises(ValueError, match="aggregation"):
        build_model("sda_tsm_r50", 3, 8, aggregation="max")  # type: ignore[arg-type]


def test_shift_moves_one_fold_each_way() -> None:
    n, t, c = 2, 4, 16
    # value = frame index + 1, so a zero can only come from the clip-end padding
    x = (torch.arange(t).float() + 1).view(1, t, 1, 1, 1).expand(n, t, c, 3, 3).reshape(n * t, c, 3, 3)
    shifted = temporal_shift(x, t).reshape(n, t, c, 3, 3)
    fold = c // 8
    for frame in range(t):
        expected_next = frame + 2 if frame + 1 < t else 0  # channels [0, fold): frame t+1
        expected_previous = frame if frame > 0 else 0  # channels [fold, 2 fold): frame t-1
        assert (shifted[:, frame, :fold] == expected_next).all()
        assert (shifted[:, frame, fold : 2 * fold] == expected_previous).all()
        assert (shifted[:, frame, 2 * fold :] == frame + 1).all()


def test_tsn_and_tsm_differ_only_by_the_shift() -> None:
    tsn = build_model("tsn_r50", 3, 8, **TINY).eval()
    tsm = build_model("tsm_r50", 3, 8, **TINY).eval()
    assert {k: v.shape for k, v in tsn.state_dict().items()} == {
        k: v.shape for k, v in tsm.state_dict().items()
    }
    tsm.load_state_dict(tsn.state_dict())
    clip = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(tsn(clip), tsm(clip))
        for stage in tsm.backbone.stages:
            for block in stage:
                block.shift = False
        torch.testing.assert_close(tsn(clip), tsm(clip))


@pytest.mark.parametrize("size", [7, 14, 5])
def test_s122_pools_like_adaptive_average_pooling(size: int) -> None:
    branch = ShortRange(16, pool_t=1, pool_hw=2, conv_t=3).eval()
    y = torch.randn(2, 16, 8, size, size)
    pooled_size = max(size // 2, 2)
    with torch.no_grad():
        # reference: torch's own adaptive pooling per frame, down then back up
        frames = y.transpose(1, 2).reshape(-1, 16, size, size)
        down = F.adaptive_avg_pool2d(frames, pooled_size).reshape(2, 8, 16, pooled_size, pooled_size)
        excited = branch.relu(branch.bn(branch.conv(down.transpose(1, 2))))
        up = F.adaptive_avg_pool2d(excited.transpose(1, 2).reshape(-1, 16, pooled_size, pooled_size), size)
        expected = up.reshape(2, 8, 16, size, size).transpose(1, 2)
        torch.testing.assert_close(branch(y), expected)


def test_s122_unpooling_at_7x7_averages_neighbours() -> None:
    branch = ShortRange(16, pool_t=1, pool_hw=2, conv_t=3)
    rows = torch.tensor([1.0, 2.0, 4.0])  # a, b, c
    pooled = rows.view(3, 1).expand(3, 3).reshape(1, 1, 1, 3, 3)
    from model.sda import adaptive_avg_pool_hw

    up = adaptive_avg_pool_hw(pooled, 7, 7)[0, 0, 0, :, 0]
    # [a, a, (a+b)/2, b, (b+c)/2, c, c]: PyTorch's adaptive average pooling 3 -> 7, which the authors'
    # S122 branch uses to upsample; nearest-neighbour would differ
    assert up.tolist() == [1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.0]
    assert branch.pool_hw == 2


def test_qsa_weights_follow_the_query() -> None:
    sda = SDA(64, aggregation="sec").eval()
    x = torch.randn(2, 64, 8, 14, 14)
    with torch.no_grad():
        _, weights = sda(x)
        y = sda.relu(sda.reduce_bn(sda.reduce(x)))
        keys = torch.stack([b(y).expand(2, 16, 8, 14, 14).mean(dim=(2, 3, 4)) for b in sda.branches], dim=1)
        scores = keys @ sda.query
        expected = torch.exp(scores) / (torch.exp(scores).sum(dim=1, keepdim=True) + 1e-8)
    torch.testing.assert_close(weights, expected)


# The paper's Tables 1-3 (174 classes, TSN backbone for the ablations), parameters in millions.
PAPER_PARAMS = [
    ("tsn_r50", {}, 23.9),
    ("sda_tsn_r50", {"reduction": 4}, 25.8),
    ("sda_tsn_r50", {"reduction": 2}, 30.2),
    ("sda_tsn_r50", {"reduction": 8}, 24.5),
    ("sda_tsn_r50", {"reduction": 16}, 24.1),
    ("sda_tsn_r50", {"branches": ("LST",)}, 24.6),
    ("sda_tsn_r50", {"branches": ("LT",)}, 25.2),
    ("sda_tsn_r50", {"branches": ("LS",)}, 24.7),
    ("sda_tsn_r50", {"branches": ("S122",)}, 24.7),
    ("sda_tsn_r50", {"branches": ("LST", "LT", "LS"), "aggregation": "avg"}, 25.5),
]


@pytest.mark.parametrize(("name", "options", "millions"), PAPER_PARAMS)
def test_parameter_counts_match_the_paper(name: str, options: dict, millions: float) -> None:
    assert count_parameters(build_model(name, 174, 8, **options)) == pytest.approx(millions * 1e6, abs=0.05e6)


def test_parameter_counts_match_the_authors_code_exactly() -> None:
    assert count_parameters(build_model("tsn_r50", 174, 8)) == 23_864_558
    assert count_parameters(build_model("tsm_r50", 174, 8)) == 23_864_558
    assert count_parameters(build_model("sda_tsm_r50", 174, 8)) == 25_768_702
    assert count_parameters(build_model("sda_tsn_r50", 174, 8)) == 25_768_702


@pytest.mark.parametrize(
    ("name", "frames", "paper_gmacs"),
    [("tsn_r50", 8, 32.9), ("sda_tsm_r50", 8, 33.9), ("sda_tsm_r50", 16, 67.8)],
)
def test_macs_match_the_paper(name: str, frames: int, paper_gmacs: float) -> None:
    macs = count_macs(build_model(name, 174, frames), frames, 224)
    assert macs == pytest.approx(paper_gmacs * 1e9, rel=0.015)


def test_summary_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert summary_main(["tsn_r50", "--frames", "8", "--classes", "174", "--size", "112", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] == 23_864_558
    assert summary["macs"] == count_macs(build_model("tsn_r50", 174, 8), 8, 112)
    assert 32.88e9 / 4 < summary["macs"] < 32.88e9 / 3  # 112 px: a quarter of the pixels, 4x4 at layer4


# --- the authors' released checkpoints -------------------------------------------------------------


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path_factory.mktemp("official") / "SDA_TSM_something_R50_8f.pth.tar"
    return path, write_official_checkpoint(path)


def test_tsv_layout_is_the_authors_model() -> None:
    rows = official_layout()
    assert len(rows) == 1224
    weights = [dims for key, dims, dtype in rows if dtype == torch.float32 and "running" not in key]
    assert sum(torch.Size(d).numel() for d in weights) == 25_768_702


def test_official_checkpoint_loads_and_matches_hand_mapping(official_file) -> None:
    path, state = official_file
    model = load_official_checkpoint(path, "sda_tsm_r50", num_frames=8)
    assert not model.training and model.num_classes == 174
    reference = build_model("sda_tsm_r50", 174, 8).eval()
    reference.load_state_dict(hand_mapped(state), strict=True)
    clip = torch.randn(1, 8, 3, 112, 112)
    with torch.no_grad():
        logits, weights = model.forward_with_dependencies(clip)
        expected_logits, expected_weights = reference.forward_with_dependencies(clip)
    assert torch.equal(logits, expected_logits) and torch.equal(weights, expected_weights)
    # every tensor of the file landed: compare a few by value
    own = model.state_dict()
    assert torch.equal(
        own["backbone.layer4.2.sda.query"], state["module.base_model.layer4.2.sda.agg.qVec"][0]
    )
    assert torch.equal(own["fc.weight"], state["module.new_fc.weight"])


def test_official_checkpoint_with_old_eft_names(tmp_path: Path, official_file) -> None:
    _, state = official_file
    renamed = {key.replace(".sda.", ".eft."): tensor for key, tensor in state.items()}
    path = tmp_path / "old.pth.tar"
    torch.save({"state_dict": renamed}, path)
    model = load_official_checkpoint(path)
    assert torch.equal(
        model.state_dict()["backbone.layer1.0.sda.reduce.weight"],
        state["module.base_model.layer1.0.sda.channel_down.weight"],
    )


def test_official_checkpoint_that_does_not_fit_names_the_key(tmp_path: Path, official_file) -> None:
    _, state = official_file
    missing = dict(state)
    del missing["module.base_model.layer2.1.sda.mdm.1.conv.weight"]
    torch.save({"state_dict": missing}, tmp_path / "missing.pth.tar")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"missing key 'backbone\.layer2\.1\.sda\.branches\.1\.conv\.weight' \(shape 32x32x3x3\)",
    ):
        load_official_checkpoint(tmp_path / "missing.pth.tar")

    extra = dict(state)
    extra["module.base_model.layer1.0.sda.mdm.4.conv.weight"] = torch.zeros(16, 16, 1, 1, 1)
    torch.save({"state_dict": extra}, tmp_path / "extra.pth.tar")
    with pytest.raises(
        CheckpointMismatchError, match=r"unexpected key .*layer1\.0\.sda\.branches\.4\.conv\.weight"
    ):
        load_official_checkpoint(tmp_path / "extra.pth.tar")

    with pytest.raises(
        CheckpointMismatchError,
        match=r"unexpected key 'backbone\.layer1\.0\.sda\.reduce\.weight' \(shape 16x64x1x1x1\) for tsm_r50",
    ):
        load_official_checkpoint(official_file[0], "tsm_r50")

    wrong_shape = dict(state)
    wrong_shape["module.base_model.layer1.0.sda.channel_down.weight"] = torch.zeros(32, 64, 1, 1, 1)
    torch.save({"state_dict": wrong_shape}, tmp_path / "shape.pth.tar")
    with pytest.raises(CheckpointMismatchError, match=r"has shape 32x64x1x1x1 in the file but 16x64x1x1x1"):
        load_official_checkpoint(tmp_path / "shape.pth.tar")


def test_official_checkpoint_runs_16_frames_as_one_clip(official_file) -> None:
    path, _ = official_file
    model = load_official_checkpoint(path, num_frames=16)
    with torch.no_grad():
        logits, weights = model.forward_with_dependencies(torch.randn(1, 16, 3, 64, 64))
    assert logits.shape == (1, 174) and weights.shape == (1, 16, 4)
