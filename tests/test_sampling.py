"""TSN segment sampling: golden values worked out by hand from the formulas in service/sampling.py."""

from __future__ import annotations

import numpy as np
import pytest

from videocore.sampling import sample_segment_indices


def test_test_mode_segment_centres_n30_t8():
    # tick = 30/8 = 3.75; centre i = int(1.875 + 3.75*i):
    # 1.875, 5.625, 9.375, 13.125, 16.875, 20.625, 24.375, 28.125
    assert sample_segment_indices(30, 8, "test") == [1, 5, 9, 13, 16, 20, 24, 28]


def test_test_mode_exact_division():
    # tick = 2: 1, 3, 5, ..., 15
    assert sample_segment_indices(16, 8, "test") == [1, 3, 5, 7, 9, 11, 13, 15]
    # tick = 1: centres 0.5 + i -> 0..7 (every frame once)
    assert sample_segment_indices(8, 8, "test") == list(range(8))


def test_two_clips_are_segment_starts_and_centres():
    # K=2, tick=3.75. clip 0: int(3.75*i) = 0, 3.75, 7.5, 11.25, 15, 18.75, 22.5, 26.25
    assert sample_segment_indices(30, 8, "test", clip_index=0, num_clips=2) == [0, 3, 7, 11, 15, 18, 22, 26]
    # clip 1: int(3.75/2 + 3.75*i) = the single-clip centres
    assert sample_segment_indices(30, 8, "test", clip_index=1, num_clips=2) == [1, 5, 9, 13, 16, 20, 24, 28]


def test_three_clips_offsets():
    # n=24, T=4: tick=6; K=3 offsets 0, 2, 4 -> starts 0, 6, 12, 18 shifted
    assert sample_segment_indices(24, 4, "test", clip_index=0, num_clips=3) == [0, 6, 12, 18]
    assert sample_segment_indices(24, 4, "test", clip_index=1, num_clips=3) == [2, 8, 14, 20]
    assert sample_segment_indices(24, 4, "test", clip_index=2, num_clips=3) == [4, 10, 16, 22]


def test_test_mode_short_clip_repeats_frames():
    # n=5, T=8: tick=0.625; int(0.3125 + 0.625*i) = 0.3125, 0.9375, 1.5625, 2.1875, 2.8125, 3.4375,
    # 4.0625, 4.6875
    assert sample_segment_indices(5, 8, "test") == [0, 0, 1, 2, 2, 3, 4, 4]


def test_train_short_clip_repeats_frames_evenly():
    # n=5, T=8, d=0: floor(5*i/8) = 0, 0.625, 1.25, 1.875, 2.5, 3.125, 3.75, 4.375
    rng = np.random.default_rng(0)
    assert sample_segment_indices(5, 8, "train", rng) == [0, 0, 1, 1, 2, 3, 3, 4]


@pytest.mark.parametrize("mode", ["train", "test"])
def test_one_frame_clip(mode):
    assert sample_segment_indices(1, 8, mode, np.random.default_rng(1)) == [0] * 8


@pytest.mark.parametrize("mode", ["train", "test"])
def test_empty_clip_raises(mode):
    with pytest.raises(ValueError):
        sample_segment_indices(0, 8, mode, np.random.default_rng(1))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError):
        sample_segment_indices(10, 0, "test")
    with pytest.raises(ValueError):
        sample_segment_indices(10, 4, "test", clip_index=2, num_clips=2)
    with pytest.raises(ValueError):
        sample_segment_indices(10, 4, "val")  # type: ignore[arg-type]


def test_train_lies_in_each_segment_and_covers_it():
    # n=30, T=8: d=3, segment i is frames [3i, 3i+2]; frames 24..29 are never sampled (recipe).
    rng = np.random.default_rng(1234)
    seen = [set() for _ in range(8)]
    for _ in range(200):
        idx = sample_segment_indices(30, 8, "train", rng)
        assert len(idx) == 8 and all(isinstance(i, int) for i in idx)
        for i, v in enumerate(idx):
            assert 3 * i <= v <= 3 * i + 2
            seen[i].add(v)
    # every offset of every segment is drawn at some point (200 draws of 3 choices)
    assert seen == [{3 * i, 3 * i + 1, 3 * i + 2} for i in range(8)]


def test_train_is_reproducible_with_a_seeded_rng():
    a = sample_segment_indices(100, 8, "train", np.random.default_rng(7))
    b = sample_segment_indices(100, 8, "train", np.random.default_rng(7))
    assert a == b
    draws = {tuple(sample_segment_indices(100, 8, "train", np.random.default_rng(s))) for s in range(10)}
    assert len(draws) > 1


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 31, 1000])
@pytest.mark.parametrize("t", [1, 3, 8, 16])
def test_always_in_range_and_length_t(n, t):
    rng = np.random.default_rng(n * 100 + t)
    for mode in ("train", "test"):
        idx = sample_segment_indices(n, t, mode, rng)
        assert len(idx) == t
        assert all(0 <= i < n for i in idx)
        assert idx == sorted(idx)
    for k in range(2):
        idx = sample_segment_indices(n, t, "test", clip_index=k, num_clips=2)
        assert len(idx) == t and all(0 <= i < n for i in idx)
