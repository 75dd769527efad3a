"""Training stage: every dataset format, sampling/augmentation semantics, a real training run with
resume, and DDP with two CPU processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import encode_clip

from model.average import main as average_main
from model.checkpoint import load_checkpoint, read_checkpoint
from model.compare import main as compare_main
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
from model.data.synthetic import FLIP_PAIRS, write_something_something_v2
from model.data.transforms import multi_scale_crop_box, train_view
from model.evaluate import reversed_pair_accuracy
from model.train import TrainingError, frames_for_batch, learning_rate_factor, parse_args, train
from model.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def write_gray_frames(folder: Path, count: int, template: str = "img_{:05d}.jpg") -> None:
    """Frame i (1-based on disk) is a uniform gray of level 8 * (i - 1): readable after any crop."""
    folder.mkdir(parents=True)
    for i in range(count):
        with av.open(str(folder / template.format(i + 1)), "w", format="image2") as container:
            stream = container.add_stream("mjpeg", rate=1)
            stream.width, stream.height, stream.pix_fmt = 48, 40, "yuvj420p"
            frame = av.VideoFrame.from_ndarray(np.full((40, 48, 3), 8 * i, np.uint8), format="rgb24")
            for packet in [*stream.encode(frame), *stream.encode()]:
                container.mux(packet)


def test_frame_folder_list_samples_segment_centres(tmp_path: Path) -> None:
    write_gray_frames(tmp_path / "frames" / "video_a", 20)
    (tmp_path / "train.txt").write_text("video_a 20 3\n")
    records = read_frame_list(tmp_path / "train.txt", tmp_path / "frames")
    assert records[0].num_frames == 20 and records[0].label == 3
    dataset = ClipDataset(
        records, num_frames=4, input_size=SIZE, train=False, image_template="img_{:05d}.jpg"
    )
    views, label = dataset[0]
    assert views.shape == (1, 4, SIZE, SIZE, 3) and label == 3
    # test mode, n=20, T=4: tick 5, centres int(2.5 + 5i) = 2, 7, 12, 17 -> gray 16, 56, 96, 136
    levels = views[0].float().mean(dim=(1, 2, 3))
    np.testing.assert_allclose(levels.numpy(), [16, 56, 96, 136], atol=3)


def test_video_list_and_class_folders_and_diving48(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        encode_clip(videos / f"{name}.mp4", frames=16, width=64, height=48)
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 1\n")
    records = read_video_list(tmp_path / "list.txt", videos)
    assert [r.label for r in records] == [0, 1]
    dataset = ClipDataset(records, num_frames=8, input_size=SIZE, train=True, seed=1)
    views, label = dataset[1]
    assert views.shape == (1, 8, SIZE, SIZE, 3) and views.dtype == torch.uint8 and label == 1

    (tmp_path / "diving.json").write_text(json.dumps([{"vid_name": "b", "label": 47, "start_frame": 0}]))
    diving = read_diving48(tmp_path / "diving.json", videos)
    assert diving[0].path == videos / "b.mp4" and diving[0].label == 47

    for cls in ("waving", "clapping"):
        (tmp_path / "classes" / cls).mkdir(parents=True)
        encode_clip(tmp_path / "classes" / cls / "x.mp4", frames=12)
    (tmp_path / "classes" / "waving" / "notes.txt").write_text("not a video")
    folders, labels = read_class_folders(tmp_path / "classes")
    assert labels == ["clapping", "waving"] and [r.label for r in folders] == [0, 1]
    evaluation = ClipDataset(folders, num_frames=8, input_size=SIZE, train=False, clips=2, crops=3)
    views, _ = evaluation[0]
    assert views.shape == (6, 8, SIZE, SIZE, 3)  # 2 clips x 3 crops


def test_something_something_v2_as_distributed(tmp_path: Path) -> None:
    root = write_something_something_v2(tmp_path / "ssv2", num_train=12, num_val=3, seed=0, short_side=48)
    train, labels = read_something_something_v2(root, "train")
    val, _ = read_something_something_v2(root, "validation")
    assert len(train) == 12 and len(val) == 3 and len(labels) == 12
    assert sorted(r.label for r in train) == list(range(12))
    assert labels[0] == "Pushing something from left to right"
    assert ssv2_flip_pairs(labels) == {0: 1, 1: 0}
    views, label = ClipDataset(train, num_frames=8, input_size=SIZE, train=False)[5]
    assert views.shape == (1, 8, SIZE, SIZE, 3) and label == train[5].label


def test_label_map_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("first\nsecond\n\n")
    assert read_label_map(tmp_path / "labels.txt") == ["first", "second"]
    (tmp_path / "bad.txt").write_text("first\n\nthird\n")
    with pytest.raises(ValueError, match="one non-empty class name per line"):
        read_label_map(tmp_path / "bad.txt")


def test_horizontal_flip_swaps_direction_dependent_labels() -> None:
    # brightness grows to the right; a flip makes it grow to the left
    ramp = np.tile(np.linspace(0, 255, 80).astype(np.uint8)[None, None, :, None], (4, 60, 1, 3))
    seen = {0: set(), 2: set()}
    for seed in range(40):
        for label in (0, 2):
            view, new_label = train_view(ramp, label, SIZE, np.random.default_rng(seed), FLIP_PAIRS)
            flipped = view[0, :, 0].mean() > view[0, :, -1].mean()
            seen[label].add(flipped)
            if label == 0:
                assert new_label == (1 if flipped else 0)
            else:
                assert new_label == 2  # "Moving something up" is the same action mirrored
    assert seen == {0: {True, False}, 2: {True, False}}  # both outcomes happen (p = 0.5)


def test_multi_scale_crop_uses_the_paper_scales_and_offsets() -> None:
    boxes = {multi_scale_crop_box(120, 160, np.random.default_rng(s)) for s in range(300)}
    sizes = {size for _, _, h, w in boxes for size in (h, w)}
    assert sizes == {120, 105, 90, 79}  # int(120 * s) for s in 1, .875, .75, .66
    for top, left, h, w in boxes:
        assert abs([120, 105, 90, 79].index(h) - [120, 105, 90, 79].index(w)) <= 1
        # offsets on TSN's grid of quarters of the free space
        assert left in {(160 - w) * k // 4 for k in range(5)} and top in {
            (120 - h) * k // 4 for k in range(5)
        }


def test_synthetic_curriculum_fades_out() -> None:
    dataset = SyntheticDataset(24, num_frames=8, input_size=SIZE, train=True, seed=0, easy_epochs=4)
    fractions = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        fractions.append(dataset.easy_fraction)
    assert fractions == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    validation = SyntheticDataset(24, num_frames=8, input_size=SIZE, train=False, seed=0, easy_epochs=4)
    assert validation.easy_fraction == 0.0
    plain = SyntheticDataset(24, num_frames=8, input_size=SIZE, train=False, seed=0, plain=True)
    assert plain.easy_fraction == 1.0  # --synthetic-plain: plain renders in validation too
    views, _ = plain[0]
    frame = views[0, 0].numpy().astype(int)
    # A plain render's background is uniform grey (128): the corner pixels of the first frame say so.
    assert all(abs(int(v) - 128) <= 3 for v in frame[0, 0]) and all(
        abs(int(v) - 128) <= 3 for v in frame[-1, -1]
    )


def _train_args(out: Path, *extra: str) -> list[str]:
    return [
        "--dataset", "synthetic", "--arch", "sda_tsm_r50", "--width", "0.125", "--size", str(SIZE),
        "--frames", "8", "--batch-size", "4", "--train-clips", "16", "--val-clips", "12",
        "--max-steps", "2", "--workers", "0", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def test_training_runs_checkpoints_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_main(_train_args(out, "--epochs", "2", "--lr-steps", "1")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(rows[0]["lr"] * 0.1)  # the step at epoch 1
    assert all(np.isfinite(row["train_loss"]) and 0 <= row["val_top1"] <= 1 for row in rows)
    assert (out / "curves.png").stat().st_size > 1000 and (out / "best.pt").exists()
    first = read_checkpoint(out / "last.pt")
    assert first["epoch"] == 1 and "optimizer" in first

    assert (
        train_main(_train_args(out, "--epochs", "3", "--lr-steps", "1", "--resume", str(out / "last.pt")))
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    resumed = read_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 2
    before, after = first["state_dict"], resumed["state_dict"]
    assert any(not torch.equal(after[k], before[k]) for k in after if after[k].is_floating_point())
    model, info = load_checkpoint(out / "last.pt")
    assert info.labels[0] == "Pushing something from left to right" and info.input_size == SIZE
    assert model.config.width == 0.125


def test_keep_last_epochs_then_average_their_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train_main(_train_args(out, "--epochs", "3", "--keep-last-epochs", "2")) == 0
    assert sorted(path.name for path in out.glob("epoch*.pt")) == ["epoch2.pt", "epoch3.pt"]
    second, third = read_checkpoint(out / "epoch2.pt"), read_checkpoint(out / "epoch3.pt")
    assert "optimizer" not in third and third["metrics"]["epoch"] == 3
    last = read_checkpoint(out / "last.pt")["state_dict"]
    assert torch.equal(third["state_dict"]["fc.weight"], last["fc.weight"])

    assert average_main([str(tmp_path / "mean.pt"), str(out / "epoch2.pt"), str(out / "epoch3.pt")]) == 0
    mean = read_checkpoint(tmp_path / "mean.pt")
    changed = 0
    for name, tensor in mean["state_dict"].items():
        a, b = second["state_dict"][name], third["state_dict"][name]
        if tensor.is_floating_point():
            assert torch.allclose(tensor, (a + b) / 2, atol=1e-7), name
            changed += int(not torch.equal(a, b))
        else:
            assert torch.equal(tensor, b), name  # BN's step counters: the last file's
    assert changed > 10  # the two epochs' weights differ, so the test compares real means
    assert mean["training_data"].endswith("weights averaged over epochs 2, 3")
    # A mean of a mean and a checkpoint keeps both descriptions instead of mislabelling the epochs.
    assert average_main([str(tmp_path / "nested.pt"), str(tmp_path / "mean.pt"), str(out / "epoch3.pt")]) == 0
    nested = read_checkpoint(tmp_path / "nested.pt")["training_data"]
    assert nested.startswith("mean of 2 checkpoints: [")
    assert "weights averaged over epochs 2, 3 (epoch 3)]" in nested and nested.endswith("(epoch 3)]")
    model, info = load_checkpoint(tmp_path / "mean.pt")
    assert info.input_size == SIZE
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 8, 3, SIZE, SIZE))).all()

    other = tmp_path / "wide"
    assert train_main(_train_args(other, "--epochs", "1", "--width", "0.25", "--keep-last-epochs", "1")) == 0
    assert average_main([str(tmp_path / "bad.pt"), str(out / "epoch3.pt"), str(other / "epoch1.pt")]) == 2
    assert not (tmp_path / "bad.pt").exists()


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path: Path) -> None:
    source = tmp_path / "8f"
    assert train_main(_train_args(source, "--epochs", "1")) == 0
    out = tmp_path / "16f"
    options = _train_args(out, "--epochs", "1", "--lr", "0", "--init", str(source / "last.pt"))
    options[options.index("--frames") + 1] = "16"  # fine-tune the 8-frame model at 16 frames
    assert train_main(options) == 0
    before, after = read_checkpoint(source / "last.pt"), read_checkpoint(out / "last.pt")
    assert after["epoch"] == 0 and after["config"]["num_frames"] == 16  # a fresh run, not a resume
    learned = [k for k in before["state_dict"] if "running" not in k and "num_batches" not in k]
    assert len(learned) > 100
    # lr 0: every learned tensor is still the source's, so all of them were loaded
    assert all(torch.equal(after["state_dict"][k], before["state_dict"][k]) for k in learned)
    wider = _train_args(tmp_path / "wide", "--epochs", "1", "--init", str(source / "last.pt"))
    wider[wider.index("--width") + 1] = "0.25"
    with pytest.raises(TrainingError, match="another architecture or width"):
        train(parse_args(wider))


def test_synthetic_oversampling_draws_classes_by_their_factors() -> None:
    def counts(dataset: SyntheticDataset) -> np.ndarray:
        return np.bincount([dataset.label_of(i) for i in range(len(dataset))], minlength=12)

    plain = SyntheticDataset(2400, num_frames=8, input_size=SIZE, train=True, seed=0)
    assert counts(plain).tolist() == [200] * 12  # clip i is class i % 12
    heavy = SyntheticDataset(2800, num_frames=8, input_size=SIZE, train=True, seed=0, oversample={6: 2, 7: 2})
    drawn = counts(heavy)  # expected 400 for classes 6 and 7, 200 for the others (binomial sd ~ 19 / 14)
    assert all(330 < drawn[c] < 470 for c in (6, 7)) and all(150 < drawn[c] < 250 for c in (0, 5, 11))
    heavy.set_epoch(1)
    assert counts(heavy).tolist() != drawn.tolist()  # a fresh draw every epoch
    assert heavy[3][1] == heavy.label_of(3)  # the clip rendered is of the drawn class
    with pytest.raises(TrainingError, match="CLASS=FACTOR"):
        train(parse_args(_train_args(Path("unused"), "--synthetic-oversample", "12=2")))


def test_mixed_frames_keeps_one_frame_per_segment_or_the_whole_clip() -> None:
    views = torch.arange(16).reshape(1, 16).repeat(3, 1)  # frame k of a 16-segment sample holds k
    kept = {
        tuple(frames_for_batch(views, 8, np.random.default_rng(seed), 0.0)[0].tolist()) for seed in range(20)
    }
    # one frame in each of the 8 segments [2i, 2i + 2), from either phase
    assert kept == {tuple(range(0, 16, 2)), tuple(range(1, 16, 2))}
    assert torch.equal(frames_for_batch(views, 8, np.random.default_rng(0), 1.0), views)
    shares = [frames_for_batch(views, 8, np.random.default_rng(s), 0.3).shape[1] == 16 for s in range(400)]
    assert 0.2 < np.mean(shares) < 0.4


def test_mixed_frames_training_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mixed"
    assert train_main(_train_args(out, "--epochs", "1", "--mixed-frames", "16", "--mixed-share", "0.5")) == 0
    state = read_checkpoint(out / "last.pt")
    assert state["config"]["num_frames"] == 8 and np.isfinite(state["metrics"]["train_loss"])
    with pytest.raises(TrainingError, match="multiple of --frames"):
        train(parse_args(_train_args(tmp_path / "bad", "--mixed-frames", "12")))
    # The command line turns the error into its message and exit status 1, without a traceback.
    capsys.readouterr()
    assert train_main(_train_args(tmp_path / "bad", "--mixed-frames", "12")) == 1
    assert "--mixed-frames must be a multiple of --frames above it, not 12" in capsys.readouterr().err


def test_learning_rate_schedules() -> None:
    # The paper's steps: x0.1 at each step epoch reached.
    assert [learning_rate_factor(e, [20, 40], 0.0) for e in (0, 19.9, 20, 40, 49)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01, 0.01]
    )
    # Half-cosine over 10 epochs: 1 at the start, (1 + cos(pi/4)) / 2 at a quarter, 1/2 halfway, 0 at the end.
    cosine = [learning_rate_factor(e, [], 0.0, "cosine", 10) for e in (0, 2.5, 5, 10)]
    assert cosine == pytest.approx([1.0, 0.8535534, 0.5, 0.0], abs=1e-6)
    # Linear warm-up over the first epoch scales either schedule.
    assert learning_rate_factor(0.5, [], 1.0, "cosine", 10) == pytest.approx(0.5 * 0.9938442, rel=5e-3)


def test_adamw_cosine_run_resumes_with_its_optimizer_state(tmp_path: Path) -> None:
    out = tmp_path / "adamw"
    options = ("--optimizer", "adamw", "--schedule", "cosine", "--lr", "0.002", "--weight-decay", "0.05")
    assert train_main(_train_args(out, "--epochs", "1", *options)) == 0
    state = read_checkpoint(out / "last.pt")
    assert all("exp_avg" in entry for entry in state["optimizer"]["state"].values())  # AdamW moments
    assert train_main(_train_args(out, "--epochs", "2", *options, "--resume", str(out / "last.pt"))) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(0.002 * 0.5)  # cosine at epoch 1 of 2


def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # torchrun hangs with --master-port 0: pick a free port ourselves
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
        "-m", "model.train", *_train_args(out, "--epochs", "1"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # written once, by rank 0
    model, _ = load_checkpoint(out / "last.pt")
    assert not any(key.startswith("module.") for key in model.state_dict())


def test_reversed_pair_accuracy_counts_only_the_time_reversed_pairs() -> None:
    def probs(high: int, low: int) -> np.ndarray:
        p = np.full(12, 0.01)
        p[high], p[low] = 0.6, 0.3
        return p

    scored = [
        (0, probs(0, 1)),  # beats its partner 1: hit
        (3, probs(2, 3)),  # loses to its partner 2: miss
        (8, probs(5, 8)),  # wrong top-1, but still above its partner 9: hit
        (11, probs(0, 11)),  # Holding has no reversed partner: not counted
    ]
    assert reversed_pair_accuracy(scored) == pytest.approx(2 / 3)


def test_compare_trains_every_variant_on_one_budget_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "table1"
    budget = [
        "--width", "0.125", "--size", str(SIZE), "--frames", "8", "--batch-size", "4", "--train-clips", "8",
        "--val-clips", "12", "--max-steps", "1", "--epochs", "1", "--workers", "0", "--no-progress",
    ]  # fmt: skip
    assert compare_main(["--out", str(out), "--eval-clips", "12", "--only", "TSN", *budget]) == 0
    tsn = out / "tsn" / "heldout.json"
    epochs = (out / "tsn" / "metrics.jsonl").read_text()
    tsn.unlink()  # interrupted after training, before scoring: a re-run scores without training again
    assert compare_main(["--out", str(out), "--eval-clips", "12", "--only", "TSN", *budget]) == 0
    assert (out / "tsn" / "metrics.jsonl").read_text() == epochs
    first = tsn.read_text()
    assert (
        compare_main(["--out", str(out), "--eval-clips", "12", "--only", "TSN", "SDA-TSM (SEC)", *budget])
        == 0
    )
    assert tsn.read_text() == first  # finished variants are not trained again
    rows = json.loads((out / "results.json").read_text())
    assert [row["name"] for row in rows] == ["TSN", "SDA-TSM (SEC)"]
    assert [row["arch"] for row in rows] == ["tsn_r50", "sda_tsm_r50"]
    assert all(row["clips"] == 12 and 0 <= row["reversed_pair_accuracy"] <= 1 for row in rows)
    assert rows[0]["parameters"] < rows[1]["parameters"]  # SDA adds its branches
    assert all(row["options"][-len(budget) :] == budget for row in rows)  # the same budget for each
    table = (out / "results.md").read_text()
    assert "| TSN |" in table and "| SDA-TSM (SEC) |" in table


def test_centre_crop_region_keeps_training_crops_inside_the_centred_square() -> None:
    # a 16:9 frame, dark in its centred square and white outside it: whole-frame crops see white,
    # centre-region crops never do (they are taken before the resize, so no blending either)
    frames = np.full((2, 60, 108, 3), 255, np.uint8)
    frames[:, :, 24:84] = 0
    whites = {"full": 0, "centre": 0}
    for seed in range(60):
        for region in whites:
            view, _ = train_view(frames, 0, SIZE, np.random.default_rng(seed), FLIP_PAIRS, region)
            whites[region] += int(view.max() > 0)
    assert whites["centre"] == 0
    assert whites["full"] > 20  # the paper's crops reach the frame's sides
    with pytest.raises(ValueError, match="region"):
        train_view(frames, 0, SIZE, np.random.default_rng(0), FLIP_PAIRS, "corner")


def test_config_file_sets_options_and_flags_override_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text(
        f"""# a tiny recipe: every kind of value a config holds
dataset = "synthetic"
arch = "sda_tsm_r50"
width = 0.125
size = {SIZE}
frames = 8
batch-size = 4
train-clips = 16
val-clips = 12
max-steps = 2
workers = 0
no-progress = true
optimizer = "adamw"
schedule = "cosine"
lr = 0.002
lr-steps = []
synthetic-oversample = ["6=2", "7=2"]
epochs = 3
stop-after-epoch = 2
out = "{out}"
"""
    )
    args = parse_args(["--config", str(config)])
    assert (args.width, args.size, args.optimizer, args.lr, args.epochs) == (0.125, SIZE, "adamw", 0.002, 3)
    assert args.synthetic_oversample == ["6=2", "7=2"] and args.lr_steps == [] and args.no_progress
    assert args.out == out and args.config == config
    # Flags override the file, wherever they stand; a list flag replaces the file's list.
    flags = parse_args(
        ["--epochs", "5", "--config", str(config), "--synthetic-oversample", "0=3", "--lr=0.01"]
    )
    assert (flags.epochs, flags.synthetic_oversample, flags.lr, flags.width) == (5, ["0=3"], 0.01, 0.125)

    # A real (tiny) run from the file: stop-after-epoch ends it after epoch 2 of the 3 it plans its
    # cosine schedule over.
    assert train_main(["--config", str(config)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["lr"] == pytest.approx(0.002 * 0.75)  # half-cosine at epoch 1 of 3: (1 + cos(pi/3)) / 2
    assert read_checkpoint(out / "last.pt")["epoch"] == 1 and "val_top1" in rows[1]
    recorded = json.loads((out / "args.json").read_text())
    assert recorded["config"] == str(config) and recorded["synthetic_oversample"] == ["6=2", "7=2"]
    model, info = load_checkpoint(out / "last.pt")
    assert model.config.width == 0.125 and info.input_size == SIZE


def test_config_file_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('mixed_frames = 16\nout = "unused"\n')
    with pytest.raises(
        TrainingError, match="unknown key 'mixed_frames' \\(did you mean 'mixed-frames'\\?\\)"
    ):
        parse_args(["--config", str(config)])
    config.write_text('epochs = 2\nlearning-rate = 0.1\nout = "unused"\n')
    assert train_main(["--config", str(config)]) == 1
    assert "config: unknown key 'learning-rate'" in capsys.readouterr().err
    config.write_text('no-progress = "yes"\n')
    with pytest.raises(TrainingError, match="no-progress is a switch"):
        parse_args(["--config", str(config), "--out", "unused"])
    config.write_text("epochs = [2\n")
    with pytest.raises(TrainingError, match="not valid TOML"):
        parse_args(["--config", str(config), "--out", "unused"])
    with pytest.raises(TrainingError, match=r"missing\.toml"):
        parse_args(["--config", str(tmp_path / "missing.toml"), "--out", "unused"])
    # Values go through the same checks as flags: argparse rejects a wrong type or choice.
    config.write_text('epochs = "many"\n')
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config), "--out", "unused"])
    assert "argument --epochs: invalid int value: 'many'" in capsys.readouterr().err


@pytest.mark.parametrize("stage", "abcdefghjkl")
def test_default_model_recipes_are_the_options_its_stages_ran_with(stage: str) -> None:
    """configs/sda-tsm-synthetic/stage-*.toml against the args.json each stage wrote (kept in the model
    card's folder): every training option the same; only where the runs read and write files differs."""
    config = ROOT / "configs" / "sda-tsm-synthetic" / f"stage-{stage}.toml"
    args = vars(parse_args(["--config", str(config)]))
    (recorded,) = (ROOT / "models" / "sda-tsm-synthetic" / "card").glob(f"stage-{stage}-*/args.json")
    ran = json.loads(recorded.read_text())
    where = {"config", "out", "init", "no_progress"} | ({"keep_last_epochs"} if stage == "j" else set())
    assert {k: v for k, v in ran.items() if k not in where} == {k: args[k] for k in ran if k not in where}
    previous = "abcdefghjkl"[max("abcdefghjkl".index(stage) - 1, 0)]
    if stage != "a":  # each stage starts from the weights of the one before
        assert str(args["init"]).startswith(f"runs/sda-tsm-synthetic/stage-{previous}/")
