"""The decoder's speed-ups (skipping unsampled non-reference frames, keyframe restarts, the thread
policy, one reused scaler) change no pixel: on every kind of file the tests make, each sampled frame
equals the same frame from a plain sequential ``container.decode(video=0)`` converted with
``frame.reformat`` (the same filter and colour range)."""

from __future__ import annotations

import av
import numpy as np
import pytest
from clips import encode_clip
from remux import trim_mp4

from videocore.decode import probe_and_decode, threads_per_decode
from videocore.sampling import sample_segment_indices
from videocore.views import INTERPOLATION, short_side_size

FRAMES = 48
# x264 and x265 choose B-frames adaptively and pick none for the near-static test pattern: b-adapt=0
# forces them (3 in a row, x264's B-pyramid making the middle one a reference).
X264_B = "b-adapt=0"
X265_B = "log-level=none:b-adapt=0:bframes=3"
CLIPS = {
    "h264-bframes-gop12.mp4": {"options": {"g": "12", "x264-params": X264_B}},
    "h264-bframes-one-gop.mp4": {"options": {"x264-params": X264_B}},
    "h264-p-only.mkv": {"options": {"bf": "0", "g": "16"}},
    "vp9.webm": {"codec": "libvpx-vp9", "options": {"g": "16"}},
    "mpeg4-bframes.avi": {"codec": "mpeg4", "options": {"bf": "2", "g": "12"}},
    "mpeg2-bframes.mpg": {"codec": "mpeg2video", "container": "mpeg", "options": {"bf": "2", "g": "12"}},
    "hevc-bframes.mkv": {"codec": "libx265", "options": {"x265-params": X265_B}},
    "mjpeg.avi": {"codec": "mjpeg", "pix_fmt": "yuvj420p"},
    "anim.gif": {"codec": "gif", "container": "gif", "pix_fmt": "rgb8"},
    "trimmed.mp4": None,  # h264-bframes-gop12.mp4 trimmed mid-GOP at frame 17 (edit list)
}


def samplings(n: int) -> dict[str, list[list[int]]]:
    rng = np.random.default_rng(n)
    return {
        "tsn-8x2": [sample_segment_indices(n, 8, "test", clip_index=k, num_clips=2) for k in range(2)],
        "tsn-16": [sample_segment_indices(n, 16, "test")],
        "ends": [[0, n - 1]],
        "random": [sorted(rng.choice(n, size=6, replace=False).tolist())],
        "all": [list(range(n))],
    }


@pytest.fixture(scope="module")
def clip_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("identical")
    paths = {}
    for name, kwargs in CLIPS.items():
        if kwargs is not None:
            paths[name] = encode_clip(root / name, frames=FRAMES, width=96, height=64, **kwargs)
    paths["trimmed.mp4"] = trim_mp4(paths["h264-bframes-gop12.mp4"], root / "trimmed.mp4", 17)
    for name in ("h264-bframes-gop12.mp4", "mpeg4-bframes.avi", "mpeg2-bframes.mpg", "hevc-bframes.mkv"):
        assert b_frames(paths[name]) > FRAMES // 3, f"{name} has no B-frames: the test would not test them"
    return paths


def b_frames(path) -> int:
    with av.open(str(path)) as container:
        types = [frame.pict_type for frame in container.decode(video=0)]
    return types.count(av.video.frame.PictureType.B)


def reference_frames(path, short_side: int | None) -> list[np.ndarray]:
    """Every frame FFmpeg presents, converted the plain way (a new scaler per frame)."""
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            width, height = short_side_size(frame.width, frame.height, short_side)
            kwargs = {"src_color_range": int(frame.color_range)} if int(frame.color_range or 0) else {}
            rgb = frame.reformat(
                width=width, height=height, format="rgb24", interpolation=INTERPOLATION, **kwargs
            )
            out.append(rgb.to_ndarray())
    return out


@pytest.mark.parametrize("short_side", [None, 40])
@pytest.mark.parametrize("name", list(CLIPS))
def test_sampled_pixels_equal_a_plain_sequential_decode(clip_paths, name, short_side):
    path = clip_paths[name]
    reference = reference_frames(path, short_side)
    n = len(reference)
    assert n == (FRAMES - 17 if name == "trimmed.mp4" else FRAMES)
    for sampling, indices in samplings(n).items():
        for threads in (None, 1, 2):
            chooser = lambda _n, chosen=indices: chosen  # noqa: E731
            d = probe_and_decode(path, chooser, resize_short_side=short_side, threads=threads)
            assert d.info.frames == n and d.warnings == []
            for clip, clip_indices in zip(d.clips, indices, strict=True):
                for frame, index in zip(clip, clip_indices, strict=True):
                    assert np.array_equal(frame, reference[index]), (sampling, threads, index)


@pytest.mark.parametrize(
    "name", ["h264-bframes-gop12.mp4", "h264-bframes-one-gop.mp4", "trimmed.mp4", "mpeg4-bframes.avi"]
)
def test_skipping_unsampled_frames_decodes_fewer_on_b_frame_content(clip_paths, name):
    def tsn8(n: int) -> list[list[int]]:
        return [sample_segment_indices(n, 8, "test")]

    skipping = probe_and_decode(clip_paths[name], tsn8, threads=1)
    plain = probe_and_decode(clip_paths[name], tsn8, threads=1, skip_unsampled=False)
    assert skipping.indices == plain.indices
    assert all(np.array_equal(a, b) for a, b in zip(skipping.clips, plain.clips, strict=True))
    assert skipping.stats["frames_decoded"] < plain.stats["frames_decoded"]


def test_thread_policy_shares_the_cpus_between_decode_workers():
    assert threads_per_decode(2, cpus=2) == 1
    assert threads_per_decode(4, cpus=2) == 1
    assert threads_per_decode(2, cpus=16) == 8
    assert threads_per_decode(1, cpus=6) == 6
    assert threads_per_decode(3) >= 1


def test_threads_must_be_positive(clip_paths):
    with pytest.raises(ValueError, match="threads"):
        probe_and_decode(clip_paths["anim.gif"], lambda n: [[0]], threads=0)
