"""videocore.decode on real clips encoded with PyAV (tests/clips.py): every frame carries its own index in
its pixels, so these tests check WHICH frames came back, not only how many."""

from __future__ import annotations

import io
import itertools

import av
import numpy as np
import pytest
from clips import _vfr_times_ms, encode_audio_only, encode_clip, random_bytes, read_index, write_png

from service.errors import http_status
from videocore.decode import DecodedVideo, VideoLimits, probe_and_decode
from videocore.errors import (
    DecodeTimeoutError,
    InputTooLargeError,
    NotAVideoError,
    UndecodableVideoError,
    VideoError,
    VideoLimitError,
)
from videocore.sampling import sample_segment_indices
from videocore.views import resize_short_side_center_crop, three_crops

# n = 24 frames, T = 8, K = 2 clips: tick = 24/8 = 3.
# clip 0: int(3*0/2 + 3*i) = 0, 3, 6, ..., 21; clip 1: int(1.5 + 3*i) = 1, 4, 7, ..., 22.
CLIP0 = [0, 3, 6, 9, 12, 15, 18, 21]
CLIP1 = [1, 4, 7, 10, 13, 16, 19, 22]


def two_test_clips(n: int) -> list[list[int]]:
    return [sample_segment_indices(n, 8, "test", clip_index=k, num_clips=2) for k in range(2)]


def read_all(clip: np.ndarray) -> list[int]:
    return [read_index(frame) for frame in clip]


@pytest.fixture(scope="module")
def clipdir(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


FORMATS = {
    "h264.mp4": ({"codec": "libx264"}, "mp4", "h264"),
    "vp9.webm": ({"codec": "libvpx-vp9"}, "webm", "vp9"),
    "mpeg4.avi": ({"codec": "mpeg4"}, "avi", "mpeg4"),
    "mjpeg.avi": ({"codec": "mjpeg", "pix_fmt": "yuvj420p"}, "avi", "mjpeg"),
    "mjpeg.mkv": ({"codec": "mjpeg", "pix_fmt": "yuvj422p"}, "mkv", "mjpeg"),
    "hevc.mkv": ({"codec": "libx265"}, "mkv", "hevc"),
    "hevc10.mkv": ({"codec": "libx265", "pix_fmt": "yuv420p10le"}, "mkv", "hevc"),
    "ffv1_10.mkv": ({"codec": "ffv1", "pix_fmt": "yuv420p10le"}, "mkv", "ffv1"),
    "odd.mp4": ({"width": 63, "height": 47, "pix_fmt": "yuv444p"}, "mp4", "h264"),
    "audiofirst.mp4": ({"audio": True, "audio_first": True}, "mp4", "h264"),
    "audiofirst.webm": ({"codec": "libvpx-vp9", "audio": True, "audio_first": True}, "webm", "vp9"),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_formats_decode_the_sampled_frames(clipdir, name):
    kwargs, container, codec = FORMATS[name]
    path = encode_clip(clipdir / name, **kwargs)
    with av.open(str(path)) as c:  # the clip is what the test claims
        assert c.streams.video[0].codec_context.name == codec
        if kwargs.get("audio_first"):
            assert c.streams[0].type == "audio" and c.streams[1].type == "video"
        if "pix_fmt" in kwargs:
            assert c.streams.video[0].codec_context.pix_fmt == kwargs["pix_fmt"]
    d = probe_and_decode(path, two_test_clips, VideoLimits())
    w, h = kwargs.get("width", 64), kwargs.get("height", 48)
    assert d.info.container == container and d.info.codec == codec
    assert (d.info.width, d.info.height, d.info.frames, d.info.rotation) == (w, h, 24, 0)
    assert d.info.fps == pytest.approx(12.0)
    assert d.info.duration_s == pytest.approx(2.0, abs=0.01)
    assert d.indices == [CLIP0, CLIP1]
    assert [c.shape for c in d.clips] == [(8, h, w, 3)] * 2
    assert all(c.dtype == np.uint8 and c.flags.c_contiguous for c in d.clips)
    assert [read_all(c) for c in d.clips] == [CLIP0, CLIP1]
    assert d.timestamps_s == [[pytest.approx(i / 12, abs=1e-3) for i in c] for c in (CLIP0, CLIP1)]
    assert d.warnings == []


def test_bytes_and_file_object_sources(clipdir):
    path = encode_clip(clipdir / "src.mp4")
    data = path.read_bytes()
    for source in (data, io.BytesIO(data), bytearray(data)):
        d = probe_and_decode(source, lambda n: [[2, 17]], VideoLimits())
        assert read_all(d.clips[0]) == [2, 17]
    with open(path, "rb") as f:
        assert read_all(probe_and_decode(f, lambda n: [[5]]).clips[0]) == [5]


def test_b_frames_every_frame_in_presentation_order(clipdir):
    path = encode_clip(clipdir / "bframes.mp4", frames=30)
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts), "x264 did not produce B-frames: the test would not exercise reordering"
    d = probe_and_decode(path, lambda n: [list(range(n)), list(range(n - 1, -1, -1))])
    assert read_all(d.clips[0]) == list(range(30))
    assert read_all(d.clips[1]) == list(range(29, -1, -1))
    assert d.stats["frames_converted"] == 30  # each frame converted once although used twice


def test_shared_frames_are_converted_once(clipdir):
    path = encode_clip(clipdir / "shared.mp4")
    d = probe_and_decode(path, lambda n: [[0, 0, 5], [5, 5, 5]])
    assert [read_all(c) for c in d.clips] == [[0, 0, 5], [5, 5, 5]]
    assert d.stats["frames_converted"] == 2


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("gop6.mp4", {"frames": 48, "options": {"g": "6"}}),
        (
            "gop6.mkv",
            {
                "codec": "libx265",
                "frames": 48,
                "options": {"x265-params": "log-level=none:keyint=6:min-keyint=6:open-gop=1", "crf": "12"},
            },
        ),
    ],
)
def test_skips_past_keyframes_and_still_returns_the_right_frames(clipdir, name, kwargs):
    path = encode_clip(clipdir / name, **kwargs)
    with av.open(str(path)) as c:
        keys = sum(p.is_keyframe for p in c.demux(video=0) if p.size)
    assert keys >= 6
    d = probe_and_decode(path, lambda n: [[2, 20, 40]])
    assert read_all(d.clips[0]) == [2, 20, 40]
    assert d.stats["skips"] >= 2 and d.stats["frames_decoded"] < 30
    # random training samples, several seeds: always the asked-for frames
    for seed in range(4):
        rng = np.random.default_rng(seed)
        d = probe_and_decode(path, lambda n, rng=rng: [sample_segment_indices(n, 8, "train", rng)])
        assert read_all(d.clips[0]) == d.indices[0]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_clip_comes_out_upright(clipdir, rotation):
    # upright picture 48 wide x 64 tall; stored rotated with a display matrix, like a phone
    path = encode_clip(clipdir / f"rot{rotation}.mp4", width=48, height=64, rotation=rotation)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        stored = (s.width, s.height)
    assert stored == ((64, 48) if rotation in (90, 270) else (48, 64))
    d = probe_and_decode(path, two_test_clips)
    assert (d.info.width, d.info.height, d.info.rotation) == (48, 64, rotation)
    assert d.clips[0].shape == (8, 64, 48, 3)
    assert [read_all(c) for c in d.clips] == [CLIP0, CLIP1]
    with pytest.raises(AssertionError):  # the reader does notice a frame that is not upright
        read_index(np.rot90(d.clips[0][3]))


def test_rotated_clip_with_resize_keeps_portrait(clipdir):
    path = encode_clip(clipdir / "rot90r.mp4", width=96, height=128, rotation=90)
    d = probe_and_decode(path, lambda n: [[3, 9]], resize_short_side=72)
    # upright 96x128 -> short side 72: 72 wide x 96 tall
    assert d.clips[0].shape == (2, 96, 72, 3)
    assert read_all(d.clips[0]) == [3, 9]
    assert (d.info.width, d.info.height) == (96, 128)  # info keeps the full size


def eval_resize_short_side_in_decode(clipdir):
    path = encode_clip(clipdir / "big.mp4", width=160, height=120)
    d = probe_and_decode(path, lambda n: [[1, 22]], resize_short_side=60)
    assert d.clips[0].shape == (2, 60, 80, 3)  # 160x120 -> 80x60
    assert read_all(d.clips[0]) == [1, 22]


def test_one_frame_clip(clipdir):
    path = encode_clip(clipdir / "one.mp4", frames=1)
    d = probe_and_decode(path, two_test_clips)
    assert d.info.frames == 1
    assert d.indices == [[0] * 8, [0] * 8]
    assert [read_all(c) for c in d.clips] == [[0] * 8, [0] * 8]
    assert d.stats["frames_converted"] == 1


def test_vfr_timestamps(clipdir):
    path = encode_clip(clipdir / "vfr.mkv", vfr=True)
    # gaps alternate 0.5, 1, 2.5 x 83.33 ms: one cycle of 3 frames is 4 x 83.33 = 333.3 ms, so frame 3
    # is at 333 ms, frame 21 at 7 cycles = 2333.3 ms and frame 22 a 0.5 gap later, 2375 ms
    times = _vfr_times_ms(24, 12)
    assert times[3] == 333 and times[22] == 2375
    d = probe_and_decode(path, lambda n: [[0, 3, 10, 22]])
    assert read_all(d.clips[0]) == [0, 3, 10, 22]
    assert d.timestamps_s[0] == [pytest.approx(times[i] / 1000, abs=1e-3) for i in (0, 3, 10, 22)]
    assert d.info.frames == 24


# ------------------------------------------------------------------------------------- bad inputs
def test_png_is_not_a_video(clipdir):
    png = write_png(clipdir / "still.png")
    for source in (png, png.read_bytes()):
        with pytest.raises(NotAVideoError) as e:
            probe_and_decode(source, two_test_clips)
        assert http_status(e.value) == 415 and "still image" in e.value.message


def test_audio_only_is_not_a_video(clipdir):
    for name in ("audio.m4a", "audio.ogg"):
        path = encode_audio_only(clipdir / name)
        with pytest.raises(NotAVideoError, match="no video stream") as e:
            probe_and_decode(path, two_test_clips)
        assert http_status(e.value) == 415


@pytest.mark.parametrize("data", [random_bytes(4096), random_bytes(100, seed=3), b"", b"hello\n" * 500])
def test_garbage_is_a_4xx_error(data):
    with pytest.raises(NotAVideoError) as e:
        probe_and_decode(data, two_test_clips)
    assert http_status(e.value) == 415


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("trunc.mp4", {}),  # moov at the end: cut files lose their index
        ("trunc_fast.mp4", {"container_options": {"movflags": "faststart"}}),
        ("trunc.mkv", {}),
        ("trunc.webm", {"codec": "libvpx-vp9"}),
    ],
)
def test_truncated_files_are_4xx_or_decode(clipdir, name, kwargs):
    data = encode_clip(clipdir / name, **kwargs).read_bytes()
    decoded = 0
    for frac in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95):
        try:
            d = probe_and_decode(data[: int(len(data) * frac)], lambda n: [list(range(n))])
        except VideoError as e:
            assert type(e) in (NotAVideoError, UndecodableVideoError) and 400 <= http_status(e) < 500
            continue
        decoded += 1
        assert isinstance(d, DecodedVideo) and 1 <= d.info.frames <= 24
        got = read_all(d.clips[0])  # the frames that exist are genuine, in increasing order
        assert got == sorted(got) and all(0 <= g < 24 for g in got)
    if name != "trunc.mp4":
        assert decoded >= 1  # streamable layouts keep the frames before the cut


def test_corrupted_bytes_never_raise_an_unexpected_type(clipdir):
    data = bytearray(encode_clip(clipdir / "corrupt.mkv").read_bytes())
    rng = np.random.default_rng(5)
    for trial in range(6):
        bad = bytearray(data)
        for i in rng.integers(len(bad) // 4, len(bad), 20 * (trial + 1)):
            bad[i] ^= 0xFF
        try:
            d = probe_and_decode(bytes(bad), two_test_clips)
            assert all(c.shape[1:] == (48, 64, 3) for c in d.clips)
        except VideoError as e:
            assert 400 <= http_status(e) < 500


def test_missing_path_is_file_not_found(clipdir):
    with pytest.raises(FileNotFoundError):
        probe_and_decode(clipdir / "nope.mp4", two_test_clips)


def test_indices_out_of_range_are_a_caller_bug(clipdir):
    path = encode_clip(clipdir / "range.mp4")
    with pytest.raises(ValueError, match="outside"):
        probe_and_decode(path, lambda n: [[0, n]])


# ----------------------------------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def small_clip(clipdir):
    return encode_clip(clipdir / "limits.mp4")  # 64x48 = 3072 pixels, 24 frames, 2.0 s


@pytest.mark.parametrize(
    "limits,setting,value",
    [
        (VideoLimits(max_pixels=3071), "max_pixels", "3,072"),
        (VideoLimits(max_duration_s=1.5), "max_duration_s", "2.00"),
        (VideoLimits(max_decoded_frames=23), "max_decoded_frames", "24"),
    ],
)
def test_limits_raise_with_a_helpful_message(small_clip, limits, setting, value):
    with pytest.raises(VideoLimitError) as e:
        probe_and_decode(small_clip, two_test_clips, limits)
    assert http_status(e.value) == 422 and e.value.limit == setting
    assert setting in e.value.message and value in e.value.message


def test_limits_at_the_boundary_pass(small_clip):
    limits = VideoLimits(max_pixels=3072, max_duration_s=2.0, max_decoded_frames=24)
    assert probe_and_decode(small_clip, two_test_clips, limits).info.frames == 24


@pytest.mark.parametrize("width,height", [(480, 320), (100, 60)])
def test_a_video_exactly_at_max_pixels_decodes(clipdir, width, height):
    # FFmpeg pads widths to its alignment when it applies its own pixel cap; the limit must still be
    # exactly width x height, as documented.
    path = encode_clip(clipdir / f"at-limit-{width}.mp4", width=width, height=height, frames=4)
    limits = VideoLimits(max_pixels=width * height)
    assert probe_and_decode(path, two_test_clips, limits).info.width == width
    with pytest.raises(VideoLimitError, match="max_pixels"):
        probe_and_decode(path, two_test_clips, VideoLimits(max_pixels=width * height - 1))


def test_max_bytes(small_clip):
    data = small_clip.read_bytes()
    with pytest.raises(VideoLimitError, match="max_bytes") as e:
        probe_and_decode(data, two_test_clips, VideoLimits(max_bytes=len(data) - 1))
    assert isinstance(e.value, InputTooLargeError) and http_status(e.value) == 413
    assert probe_and_decode(data, two_test_clips, VideoLimits(max_bytes=len(data))).info.frames == 24


def test_timeout(small_clip):
    with pytest.raises(DecodeTimeoutError, match="timeout_s") as e:
        probe_and_decode(small_clip.read_bytes(), two_test_clips, VideoLimits(timeout_s=1e-9))
    assert http_status(e.value) == 422


# --------------------------------------------------------------------------------------- resizing
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def bands(h: int, w: int, cuts: list[int], colors, axis: int, t: int = 2) -> np.ndarray:
    """(t, h, w, 3) frames split along ``axis`` (1 rows, 2 columns) into colour bands at ``cuts``."""
    img = np.zeros((h, w, 3), np.uint8)
    edges = [0, *cuts, (h, w)[axis - 1]]
    for (a, b), col in zip(itertools.pairwise(edges), colors, strict=True):
        if axis == 2:
            img[:, a:b] = col
        else:
            img[a:b] = col
    return np.stack([img] * t)


def assert_solid(region: np.ndarray, color, tol: int = 3) -> None:
    diff = np.abs(region.astype(int) - np.array(color)).max()
    assert diff <= tol, f"expected {color}, off by {diff}"


def test_center_crop_landscape():
    # 40x80 (h x w): red cols 0-19, green 20-59, blue 60-79. Short side 20 -> 20x40 (exact 1/2).
    # Centre crop 20: left = round((40-20)/2) = 10 -> resized cols 10..29 = original cols 20..59: green.
    frames = bands(40, 80, [20, 60], [RED, GREEN, BLUE], axis=2)
    out = resize_short_side_center_crop(frames, 20, 20)
    assert out.shape == (2, 20, 20, 3) and out.dtype == np.uint8
    assert_solid(out[:, :, 1:19], GREEN)  # edge columns may blend with the neighbours


def test_center_crop_portrait():
    # 80x40: rows 0-19 red, 20-59 green, 60-79 blue; short side 20 -> 40x20; crop top = 10: green
    frames = bands(80, 40, [20, 60], [RED, GREEN, BLUE], axis=1)
    out = resize_short_side_center_crop(frames, 20, 16)
    assert out.shape == (2, 16, 16, 3)
    assert_solid(out[:, 1:15], GREEN)


def test_center_crop_no_resize_needed_is_exact():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 24, 30, 3), dtype=np.uint8)
    out = resize_short_side_center_crop(frames, 24, 20)
    # no resize (short side is already 24); top = round(4/2) = 2, left = round(10/2) = 5
    np.testing.assert_array_equal(out, frames[:, 2:22, 5:25])
    with pytest.raises(ValueError):
        resize_short_side_center_crop(frames, 24, 25)


def test_resize_keeps_flat_colours_and_is_deterministic():
    frames = np.full((2, 30, 50, 3), (77, 140, 201), np.uint8)
    out = resize_short_side_center_crop(frames, 12, 12)
    assert_solid(out, (77, 140, 201), tol=1)
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_short_side_center_crop(noisy, 12, 10), resize_short_side_center_crop(noisy, 12, 10)
    )


def test_three_crops_landscape():
    # 40x120: thirds red / green / blue. Short side 20 -> 20x60; step = (60-20)//4 = 10;
    # squares at 0, 20, 40 (20 wide) = original cols 0-39, 40-79, 80-119: red, green, blue.
    frames = bands(40, 120, [40, 80], [RED, GREEN, BLUE], axis=2, t=3)
    out = three_crops(frames, 20, 10)
    assert out.shape == (3, 3, 10, 10, 3)
    assert_solid(out[0, :, :, :9], RED)
    assert_solid(out[1, :, :, 1:9], GREEN)
    assert_solid(out[2, :, :, 1:], BLUE)


def test_three_crops_portrait():
    # 120x40: rows thirds; squares top / centre / bottom
    frames = bands(120, 40, [40, 80], [RED, GREEN, BLUE], axis=1)
    out = three_crops(frames, 20, 8)
    assert out.shape == (3, 2, 8, 8, 3)
    assert_solid(out[0, :, :7], RED)
    assert_solid(out[1, :, 1:7], GREEN)
    assert_solid(out[2, :, 1:], BLUE)


def test_three_crops_unequal_step():
    # 20x47 (already short side 20): step = (47-20)//4 = 6; squares at cols 0, 12, 24 (not 27: the
    # reference GroupFullResSample offsets). Column c carries value c*5 in the red channel.
    img = np.zeros((1, 20, 47, 3), np.uint8)
    img[..., 0] = (np.arange(47) * 5).astype(np.uint8)
    out = three_crops(img, 20, 20)
    assert out.shape == (3, 1, 20, 20, 3)
    for view, start in zip(out, (0, 12, 24), strict=True):
        np.testing.assert_array_equal(view[0, 0, :, 0], (np.arange(start, start + 20) * 5).astype(np.uint8))
