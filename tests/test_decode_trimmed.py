"""Files rewritten by real tools: an MP4 trimmed mid-GOP (edit list, ``is_discard`` packets) and a clip
with a corrupt packet. The reference is what FFmpeg itself presents: a plain sequential
``container.decode(video=0)``; the frames' pixels carry their index (tests/clips.py)."""

from __future__ import annotations

import av
import pytest
from clips import encode_clip, read_index
from remux import damage_packet, trim_mp4

from videocore.decode import probe_and_decode

SOURCE_FRAMES = 48
GOP = 12


def presented(path) -> list[int]:
    """The frames FFmpeg shows, in order: a plain sequential decode."""
    with av.open(str(path)) as container:
        return [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


def read_all(clip) -> list[int]:
    return [read_index(frame) for frame in clip]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("trim") / "source.mp4"
    # b-adapt=0: x264 picks no B-frames for the near-static pattern unless forced
    return encode_clip(path, frames=SOURCE_FRAMES, options={"g": str(GOP), "x264-params": "b-adapt=0"})


@pytest.fixture(scope="module", params=[1, 5, 17])
def trimmed(request, source, tmp_path_factory):
    cut = request.param
    path = trim_mp4(source, tmp_path_factory.mktemp("trim") / f"cut{cut}.mp4", cut)
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    discarded = [p for p in packets if p.is_discard]
    # What the test is about: the edit list starts mid-GOP, so the file begins with discard packets,
    # the first of them the keyframe the first shown frames need; the first shown one is no keyframe.
    assert discarded and packets[0].is_discard and packets[0].is_keyframe
    assert not min((p for p in packets if not p.is_discard), key=lambda p: p.pts).is_keyframe
    with av.open(str(path)) as container:
        b_frames = [f for f in container.decode(video=0) if f.pict_type == av.video.frame.PictureType.B]
    assert len(b_frames) > 5  # B-frames: decode order is not presentation order
    return path, cut, len(discarded)


def test_trimmed_mp4_every_frame_is_the_one_ffmpeg_presents(trimmed):
    path, cut, discarded = trimmed
    shown = presented(path)
    assert shown == list(range(cut, SOURCE_FRAMES))  # FFmpeg honours the edit list
    d = probe_and_decode(path, lambda n: [list(range(n)), list(range(n - 1, -1, -1))])
    assert d.info.frames == len(shown)
    assert read_all(d.clips[0]) == shown
    assert read_all(d.clips[1]) == shown[::-1]
    assert d.warnings == []
    assert d.stats["discarded"] == discarded and d.stats["packets"] == len(shown)
    assert d.timestamps_s[0] == [pytest.approx(i / 12, abs=1e-3) for i in range(len(shown))]
    assert d.info.duration_s == pytest.approx(len(shown) / 12, abs=0.01)


@pytest.mark.parametrize("indices", [[0, 1], [0, 30], [6, 7, 20, 29], [25]])
def test_trimmed_mp4_sampled_and_skipping(trimmed, indices):
    path, _, _ = trimmed
    shown = presented(path)
    d = probe_and_decode(path.read_bytes(), lambda n: [[i for i in indices if i < n]])
    assert read_all(d.clips[0]) == [shown[i] for i in indices if i < len(shown)]
    assert d.warnings == []


def test_a_corrupt_packet_is_substituted_and_said(tmp_path):
    src = encode_clip(tmp_path / "p.mkv", frames=24, options={"g": "12", "bf": "0"})
    path = damage_packet(src, tmp_path / "damaged.mkv", 5)  # P-only: packet 5 is frame 5
    d = probe_and_decode(path, lambda n: [list(range(n))])
    assert d.info.frames == 24
    assert read_all(d.clips[0]) == [0, 1, 2, 3, 4, 4, *range(6, 24)]
    [warning] = d.warnings
    assert warning.kind == "frames_substituted" and "[5]" in warning.message


def test_a_stream_that_ends_early_is_said(tmp_path):
    """The last packets are corrupt: the sampled frames at the end are substituted by the last frame
    that decoded, and the warning says where decoding ended."""
    src = encode_clip(tmp_path / "p.mkv", frames=24, options={"g": "12", "bf": "0"})
    path = damage_packet(damage_packet(src, tmp_path / "d1.mkv", 23), tmp_path / "d2.mkv", 22)
    d = probe_and_decode(path, lambda n: [[0, 10, 22, 23]])
    assert read_all(d.clips[0]) == [0, 10, 21, 21]
    [warning] = d.warnings
    assert warning.kind == "frames_substituted" and "[22, 23]" in warning.message
    assert "decoding ended at frame 21" in warning.message
    # one missing frame in the middle says nothing about the end
    middle = probe_and_decode(damage_packet(src, tmp_path / "d3.mkv", 5), lambda n: [[5, 10]])
    assert "ended" not in middle.warnings[0].message
