"""model.data.synthetic: determinism, clip validity, class semantics measured on rendered pixels, SSv2 files.

Motion is measured on ``plain=True`` renders (grey background, object A solid red, object B solid blue,
no nuisance): the objects are segmented by colour and their centroid, area and principal-axis angle are
read off every frame. Image coordinates: x right, y down; an angle that grows in these coordinates turns
clockwise on screen (anchored by ``test_orientation_helper_convention`` on hand-drawn bars).
"""

import json

import numpy as np
import pytest

from model.data.synthetic import (
    ACTION_SQUARE,
    FLIP_PAIRS,
    PLAIN_COLOURS,
    SYNTHETIC_LABELS,
    SYNTHETIC_TEMPLATES,
    generate,
    render_clip,
    write_something_something_v2,
)

RED, BLUE = PLAIN_COLOURS
SEEDS = (0, 1, 2)
SIDE = 96


def _mask(frame: np.ndarray, colour) -> np.ndarray:
    return np.abs(frame.astype(np.int32) - np.asarray(colour, np.int32)).sum(-1) < 60


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "object not visible"
    return np.array([xs.mean(), ys.mean()])


def _orientation(mask: np.ndarray) -> float:
    """Principal-axis angle in degrees (mod 180) in image coordinates (y down)."""
    ys, xs = np.nonzero(mask)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    return float(np.degrees(0.5 * np.arctan2(2 * (dx * dy).mean(), (dx * dx).mean() - (dy * dy).mean())))


def _turned(frames: np.ndarray, colour) -> float:
    """Total signed rotation (degrees, > 0 = clockwise on screen), unwrapping the 180-degree ambiguity."""
    angles = [_orientation(_mask(f, colour)) for f in frames]
    steps = (np.diff(angles) + 90.0) % 180.0 - 90.0
    return float(steps.sum())


def _check(frames: np.ndarray, label: int) -> None:
    """Assert that a plain render shows the motion of class ``label``."""
    _, h, w, _ = frames.shape
    s = min(h, w)
    first, last = frames[0], frames[-1]
    if label in (8, 9, 10):
        d0 = _centroid(_mask(first, BLUE)) - _centroid(_mask(first, RED))
        d1 = _centroid(_mask(last, BLUE)) - _centroid(_mask(last, RED))
        n0, n1 = np.linalg.norm(d0), np.linalg.norm(d1)
        if label == 8:
            assert n1 < 0.7 * n0 and d0 @ d1 > 0, (d0, d1)
        elif label == 9:
            assert n0 < 0.7 * n1 and d0 @ d1 > 0, (d0, d1)
        else:  # they passed each other: the order along the motion swapped, and both gaps are wide
            assert d0 @ d1 < 0 and min(n0, n1) > 0.1 * s, (d0, d1)
        return
    m0, m1 = _mask(first, RED), _mask(last, RED)
    (x0, y0), (x1, y1) = _centroid(m0), _centroid(m1)
    region = ACTION_SQUARE * s  # the main action's square (see test_main_action_stays_in_the_centre_crop)
    dx, dy = (x1 - x0) / region, (y1 - y0) / region
    growth = m1.sum() / m0.sum()
    if label in (0, 1):
        assert (dx > 0.2 if label == 0 else dx < -0.2) and abs(dy) < 0.5 * abs(dx), (dx, dy)
    elif label in (2, 3):  # up = y decreases
        assert (dy < -0.2 if label == 2 else dy > 0.2) and abs(dx) < 0.5 * abs(dy), (dx, dy)
    elif label == 4:
        assert growth > 2.5, growth
    elif label == 5:
        assert growth < 1 / 2.5, growth
    elif label in (6, 7):
        turn = _turned(frames, RED)
        assert (turn > 50 if label == 6 else turn < -50) and 0.8 < growth < 1.25, (turn, growth)
        assert max(abs(x1 - x0), abs(y1 - y0)) < 0.15 * s
    else:  # holding
        assert max(abs(x1 - x0), abs(y1 - y0)) < 0.08 * s and 0.75 < growth < 1.33, (dx, dy, growth)
        assert abs(_turned(frames, RED)) < 25


def test_label_set():
    assert len(SYNTHETIC_LABELS) == 12
    assert SYNTHETIC_LABELS[0] == "Pushing something from left to right"
    assert SYNTHETIC_LABELS[6] == "Turning something clockwise"
    assert SYNTHETIC_LABELS[10] == "Moving something and something so they pass each other"
    assert SYNTHETIC_LABELS[11] == "Holding something"
    assert SYNTHETIC_TEMPLATES[8] == "Moving [something] and [something] closer to each other"
    assert FLIP_PAIRS == {0: 1, 1: 0, 6: 7, 7: 6}


def test_orientation_helper_convention():
    # A horizontal bar, then the same bar after a clockwise quarter-of-a-right-angle turn on screen: its right
    # end goes down (y grows), i.e. it runs from top-left to bottom-right.
    img = np.zeros((41, 41), bool)
    img[19:22, 5:36] = True
    diag = np.zeros((41, 41), bool)
    for t in range(-14, 15):
        diag[20 + t - 1 : 20 + t + 2, 20 + t] = True
    assert abs(_orientation(img)) < 2
    assert 40 < _orientation(diag) < 50


def test_deterministic_and_seeded():
    a = [c.frames for c in generate(3, seed=7, short_side=48)]
    b = [c.frames for c in generate(3, seed=7, short_side=48)]
    c = [c.frames for c in generate(3, seed=8, short_side=48)]
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    assert not any(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # any index can be reproduced alone
    again = render_clip(2, np.random.default_rng([7, 2]), short_side=48)
    assert np.array_equal(again.frames, a[2])


@pytest.mark.parametrize("label", [0, 7, 11])  # a forward class, a reversed one, the static one
def test_rendering_a_selection_gives_the_same_pixels(label):
    # Training draws only its sampled frames; they must be the frames of the whole clip, including the
    # repeats that clips shorter than T need and the back-to-front order of reversed classes.
    for seed in SEEDS:
        whole = render_clip(label, np.random.default_rng(seed), short_side=48)
        n = len(whole.frames)
        assert whole.length == n
        wanted = [n - 1, 0, 0, n // 2, 3, 3, n - 1]
        seen_lengths = []

        def select(length: int, seen=seen_lengths, wanted=wanted) -> list[int]:
            seen.append(length)
            return wanted

        part = render_clip(label, np.random.default_rng(seed), short_side=48, select=select)
        assert seen_lengths == [n] and part.length == n and part.fps == whole.fps
        assert np.array_equal(part.frames, whole.frames[wanted])
    with pytest.raises(ValueError, match="selected frame indices"):
        render_clip(label, np.random.default_rng(0), short_side=48, select=lambda length: [length])


def test_generate_cycles_labels():
    assert [c.label for c in generate(14, seed=0, short_side=32)] == [*range(12), 0, 1]
    assert [c.label for c in generate(4, seed=0, short_side=32, labels=[3, 10])] == [3, 10, 3, 10]


@pytest.mark.parametrize("label", range(12))
def test_every_class_renders_valid_clips(label):
    for seed in SEEDS:
        clip = render_clip(label, np.random.default_rng(seed), short_side=64)
        f, h, w, ch = clip.frames.shape
        assert clip.frames.dtype == np.uint8 and ch == 3 and clip.label == label
        assert min(h, w) == 64 and max(h, w) % 2 == 0 and max(h, w) / 64 <= 16 / 9 + 0.02
        assert 8 <= clip.fps <= 30
        assert 1.5 - 0.5 / clip.fps <= f / clip.fps <= 4.0 + 0.5 / clip.fps
        assert np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).max() > 0  # something moves
        assert clip.frames.std() > 5  # not a blank clip


def test_appearance_varies():
    clips = list(generate(24, seed=3, short_side=48))
    assert len({c.frames.shape[1:3] for c in clips}) >= 3
    assert len({c.fps for c in clips}) >= 4
    means = np.array([c.frames[0].reshape(-1, 3).mean(0) for c in clips])
    assert means.std(0).min() > 15  # backgrounds/colours are not all alike


@pytest.mark.parametrize("even", [0, 2, 4, 6, 8])
def test_pairs_are_exact_time_reversals(even):
    # Same random stream -> the odd member is the frame-reversed even member: every nuisance factor has the
    # same distribution in both classes, so frame order is the only cue inside a pair.
    for seed in SEEDS:
        fwd = render_clip(even, np.random.default_rng(seed), short_side=48)
        bwd = render_clip(even + 1, np.random.default_rng(seed), short_side=48)
        assert np.array_equal(bwd.frames, fwd.frames[::-1])


@pytest.mark.parametrize("label", range(12))
def test_class_motion_and_horizontal_flip(label):
    for seed in SEEDS:
        frames = render_clip(label, np.random.default_rng(seed), short_side=SIDE, plain=True).frames
        _check(frames, label)
        flipped = frames[:, :, ::-1]
        _check(flipped, FLIP_PAIRS.get(label, label))
        if label in FLIP_PAIRS:  # the check can tell them apart: the flip is not still the original class
            with pytest.raises(AssertionError):
                _check(flipped, label)
        if label < 10:  # ... and neither is the time reversal
            with pytest.raises(AssertionError):
                _check(frames[::-1], label)


@pytest.mark.parametrize("label", range(12))
def test_main_action_stays_in_the_centre_crop(label):
    # The service (like the paper) classifies a centre crop of 0.875 x the short side; the main object(s)
    # must be in it in every frame of every aspect ratio, or no model could see the action.
    for seed in [*SEEDS, *range(100, 112)]:
        frames = render_clip(label, np.random.default_rng(seed), short_side=SIDE, plain=True).frames
        _, h, w, _ = frames.shape
        half = ACTION_SQUARE * min(h, w) / 2
        for frame in frames:
            for colour in (RED, BLUE) if label in (8, 9, 10) else (RED,):
                x, y = _centroid(_mask(frame, colour))
                assert abs(x - (w - 1) / 2) <= half and abs(y - (h - 1) / 2) <= half, (x, y, w, h)


def test_pass_differs_from_closer_only_in_time():
    # A pass is "closer" then "apart": its first half checks as class 8 and its second half as class 9.
    for seed in SEEDS:
        frames = render_clip(10, np.random.default_rng(seed), short_side=SIDE, plain=True).frames
        red = [_centroid(_mask(f, RED)) for f in (frames[0], frames[-1])]
        blue = [_centroid(_mask(f, BLUE)) for f in (frames[0], frames[-1])]
        axis = (blue[0] - red[0]) / np.linalg.norm(blue[0] - red[0])
        gaps = []
        for f in frames:  # signed gap along the initial direction (robust to partial overlap)
            gaps.append((_centroid(_mask(f, BLUE)) - _centroid(_mask(f, RED))) @ axis)
        crossing = int(np.argmax(np.array(gaps) < 0))
        assert 0.15 * len(frames) < crossing < 0.85 * len(frames), (crossing, len(frames))
        _check(frames[:crossing], 8)  # up to the crossing it is a 'closer' clip
        assert (blue[1] - red[1]) @ axis < 0


def test_write_something_something_v2(tmp_path):
    av = pytest.importorskip("av")
    out = write_something_something_v2(tmp_path / "ssv2", 3, 2, seed=0, short_side=48)
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {name: str(i) for i, name in enumerate(SYNTHETIC_LABELS)}
    train = json.loads((out / "train.json").read_text())
    val = json.loads((out / "validation.json").read_text())
    assert len(train) == 3 and len(val) == 2
    ids = [e["id"] for e in train + val]
    assert len(set(ids)) == 5 and all(isinstance(i, str) and i.isdigit() for i in ids)
    for i, e in enumerate(train + val):
        assert set(e) == {"id", "label", "template", "placeholders"}
        assert e["template"].replace("[", "").replace("]", "") == e["label"]
        assert labels[e["label"]] == str(i % 3 if i < 3 else i - 3)  # each split cycles the classes
        assert len(e["placeholders"]) == e["template"].count("[something]") >= 1
        assert (out / "videos" / f"{e['id']}.webm").stat().st_size > 0
    expected = next(generate(1, seed=0, short_side=48))
    with av.open(str(out / "videos" / f"{train[0]['id']}.webm")) as container:
        assert "webm" in container.format.name
        stream = container.streams.video[0]
        assert stream.codec_context.name == "vp9"
        decoded = np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(stream)])
        assert abs(float(stream.average_rate) - expected.fps) < 0.01
    assert decoded.shape == expected.frames.shape
    assert np.abs(decoded.astype(np.int16) - expected.frames).mean() < 12  # lossy, but the same video


def test_cli_preview_and_dataset(tmp_path):
    pytest.importorskip("matplotlib")
    from model.data.synthetic import main

    png = tmp_path / "sheet.png"
    main(
        [
            "--out",
            str(tmp_path / "d"),
            "--train",
            "1",
            "--val",
            "1",
            "--short-side",
            "32",
            "--preview",
            str(png),
        ]
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((tmp_path / "d" / "validation.json").read_text())) == 1
