"""Encode tiny test clips with PyAV whose pixels say which frame they are.

The ``frame-index`` pattern draws, in the top half of each frame, ``NUM_BARS`` vertical bars: the left
bar is always white and the right bar always black (anchors: a mirrored or wrongly rotated frame does
not read back), the bars between carry the frame index in binary, most significant bit first. The
bottom half is mid-gray, so an upside-down frame does not read back either. :func:`read_index` reads
the index back from a decoded RGB frame, so a test can check WHICH frames the decoder returned, not
just how many. Bars are several pixels wide and black/white, so they survive lossy codecs, chroma
subsampling and moderate resizing.

Other tests may import these helpers (``from clips import encode_clip`` with pytest's default
rootdir import mode, which puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

NUM_BARS = 10  # anchor + 8 bits + anchor: indices 0..255
INDEX_BITS = NUM_BARS - 2
BOTTOM_GRAY = 128

_EXT_TO_FORMAT = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB picture encoding ``index`` (see the module docstring)."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} does not fit in {INDEX_BITS} bits")
    img = np.full((height, width, 3), BOTTOM_GRAY, np.uint8)
    top = height // 2
    bits = [1] + [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)] + [0]
    for j, bit in enumerate(bits):
        x0, x1 = j * width // NUM_BARS, (j + 1) * width // NUM_BARS
        img[:top, x0:x1] = 255 if bit else 0
    return img


def read_index(rgb: np.ndarray) -> int:
    """Read back the index drawn by :func:`frame_pattern` from an upright decoded (H, W, 3) frame.

    Raises AssertionError when the frame does not carry the pattern the right way up (anchors or
    the gray bottom half missing).
    """
    h, w = rgb.shape[:2]
    luma = rgb.astype(np.float32).mean(axis=2)
    row = h // 4
    levels = []
    for j in range(NUM_BARS):
        x = int((j + 0.5) * w / NUM_BARS)
        levels.append(float(luma[max(row - 1, 0) : row + 2, max(x - 1, 0) : x + 2].mean()))
    bottom = float(luma[(3 * h) // 4, w // 4 : (3 * w) // 4].mean())
    assert levels[0] > 200 and levels[-1] < 55, f"anchors not found (rotated/flipped?): {levels}"
    assert abs(bottom - BOTTOM_GRAY) < 40, f"bottom half is {bottom:.0f}, not gray (upside down?)"
    for v in levels[1:-1]:
        assert v > 190 or v < 65, f"ambiguous bar level {v:.0f} in {levels}"
    value = 0
    for v in levels[1:-1]:
        value = (value << 1) | int(v > 128)
    return value


def _rotate_for_storage(img: np.ndarray, rotation: int) -> np.ndarray:
    """What a camera stores when the display must rotate it ``rotation`` degrees counterclockwise."""
    return np.ascontiguousarray(np.rot90(img, k=-(rotation // 90)))


def encode_clip(
    path: str | os.PathLike,
    *,
    codec: str = "libx264",
    container: str | None = None,
    width: int = 64,
    height: int = 48,
    frames: int = 24,
    fps: int = 12,
    pix_fmt: str = "yuv420p",
    pattern: str = "frame-index",
    audio: bool = False,
    audio_first: bool = False,
    vfr: bool = False,
    rotation: int = 0,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode a clip and return its path.

    ``width`` x ``height`` is the UPRIGHT (display) size. With ``rotation`` (degrees counterclockwise,
    as FFmpeg's display matrix: 90 is what ``ffmpeg -display_rotation 90`` writes) the stored frames
    are the upright pictures rotated the other way and the stream carries a display matrix, exactly
    like a phone recording; a correct reader returns the upright pictures.

    ``pattern``: ``frame-index`` (see :func:`frame_pattern`) or ``noise`` (seeded random pixels, hard
    to compress, for timing). ``vfr``: presentation timestamps with irregular gaps (1/1000 s time base).
    ``audio``: add an audio track (AAC in MP4/MOV, MP2 in AVI, Opus elsewhere); ``audio_first`` makes it
    stream 0.
    ``options``: encoder options (e.g. ``{"crf": "10"}``, ``{"g": "6"}`` for a keyframe every 6 frames).
    ``container_options``: muxer options (e.g. ``{"movflags": "faststart"}``).
    """
    path = Path(path)
    fmt = container or _EXT_TO_FORMAT.get(path.suffix.lower())
    if rotation % 90:
        raise ValueError("rotation must be a multiple of 90")
    rotation %= 360
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    rng = np.random.default_rng(1234)
    opts = dict(_default_options(codec))
    opts.update(options or {})

    out = av.open(str(path), "w", format=fmt, options=container_options or {})
    try:
        astream = None
        if audio and audio_first:
            astream = _add_audio(out, fmt)
        vstream = out.add_stream(codec, rate=fps, options=opts)
        vstream.width, vstream.height, vstream.pix_fmt = stored_w, stored_h, pix_fmt
        if codec in ("mjpeg", "mpeg4"):
            vstream.bit_rate = 20_000_000  # near-lossless for a tiny clip
        if vfr:
            vstream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            vstream.set_display_rotation(rotation)
        if audio and not audio_first:
            astream = _add_audio(out, fmt)

        pts_ms = _vfr_times_ms(frames, fps) if vfr else None
        for i in range(frames):
            if pattern == "frame-index":
                img = frame_pattern(i, width, height)
            elif pattern == "noise":
                img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            else:
                raise ValueError(f"unknown pattern {pattern!r}")
            frame = av.VideoFrame.from_ndarray(_rotate_for_storage(img, rotation), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vstream.encode(frame))
            if astream is not None:
                _mux_audio_for(out, astream, (pts_ms[i] / 1000) if pts_ms else i / fps, 1 / fps)
        out.mux(vstream.encode(None))
        if astream is not None:
            out.mux(astream.encode(None))
    finally:
        out.close()
    return path


def _default_options(codec: str) -> dict[str, str]:
    if codec == "libx264":
        return {"preset": "veryfast", "crf": "12"}  # veryfast keeps x264's B-frames (3)
    if codec == "libx265":
        return {"preset": "ultrafast", "crf": "12", "x265-params": "log-level=none"}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
    return {}


def _vfr_times_ms(frames: int, fps: int) -> list[int]:
    """Irregular, strictly increasing presentation times: gaps alternate 0.5x, 1x and 2.5x nominal."""
    base = 1000 / fps
    gaps = [0.5, 1.0, 2.5]
    t, out = 0.0, []
    for i in range(frames):
        out.append(round(t))
        t += base * gaps[i % 3]
    return out


_AUDIO_WRITTEN: dict[int, int] = {}  # samples written so far, per output stream index (one clip at a time)


def _add_audio(out: av.container.OutputContainer, fmt: str | None):
    codec = "aac" if fmt in ("mp4", "mov") else "libopus"
    if fmt == "avi":
        codec = "mp2"
    rate = 48000
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    _AUDIO_WRITTEN[stream.index] = 0
    return stream


def _mux_audio_for(out, stream, t0: float, dur: float) -> None:
    """Encode audio (a quiet tone) up to time ``t0 + dur``."""
    rate = stream.codec_context.sample_rate
    fmt = stream.codec_context.format.name
    frame_size = stream.codec_context.frame_size or 1024
    end = int((t0 + dur) * rate)
    while _AUDIO_WRITTEN[stream.index] + frame_size <= end:
        n0 = _AUDIO_WRITTEN[stream.index]
        tone = 0.1 * np.sin(2 * np.pi * 440 * (n0 + np.arange(frame_size)) / rate)
        if fmt.startswith("s16"):
            data = (tone * 32767).astype(np.int16)[None, :]
        else:
            data = tone.astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, n0, Fraction(1, rate)
        out.mux(stream.encode(frame))
        _AUDIO_WRITTEN[stream.index] = n0 + frame_size


def encode_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """An audio-only file (format from the extension: .m4a/.mp4 AAC, .mka/.ogg/.webm Opus)."""
    path = Path(path)
    fmt = {".m4a": "mp4", ".mp4": "mp4", ".mka": "matroska", ".webm": "webm", ".ogg": "ogg"}[path.suffix]
    out = av.open(str(path), "w", format=fmt)
    try:
        stream = _add_audio(out, fmt)
        _mux_audio_for(out, stream, 0.0, seconds)
        out.mux(stream.encode(None))
    finally:
        out.close()
    return path


def write_png(path: str | os.PathLike, width: int = 64, height: int = 48) -> Path:
    """Write a still PNG image (the frame-index pattern of frame 5) with PyAV's PNG encoder."""
    path = Path(path)
    frame = av.VideoFrame.from_ndarray(frame_pattern(5, width, height), format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "rgb24"
    codec.time_base = Fraction(1, 1)
    data = b"".join(bytes(p) for p in codec.encode(frame)) + b"".join(bytes(p) for p in codec.encode(None))
    path.write_bytes(data)
    return path


def random_bytes(size: int = 4096, seed: int = 0) -> bytes:
    """Seeded random bytes: not any media container."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
