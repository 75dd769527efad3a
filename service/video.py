"""Bounded, torch-free video decoding shared by the service and the trainer.

The service and the trainer both read clips through :func:`probe_and_decode`, so a model is trained
and served on identical frames (same decoder, same frame numbering, same YUV->RGB conversion and
resize filter). Only numpy and PyAV are used.

Why it is built this way (measured on real clips; see platform notes "Decoding (PyAV)"):

* **Count by demuxing, not by trusting the header.** ``nb_frames`` is missing or wrong for VFR, WebM
  and many AVIs. Reading the video packets costs no decoding, gives the exact frame count the
  sampler needs, the presentation order (frames are numbered by presentation timestamp, so B-frame
  reordering does not shuffle indices) and where the keyframes are. The packets are kept, so the
  decode pass needs no container seek and no second demux.
* **Decode forward once, convert only the sampled frames.** Decoding is unavoidable for every frame
  between two keyframes, but the YUV->RGB conversion (and the resize) is done only for the frames a
  clip uses, once per frame even when several clips share it. With ``resize_short_side`` the resize
  happens inside that conversion, so a 4K frame is never expanded to full-size RGB.
* **Skip only past keyframes.** When the next needed frame lies at or beyond a keyframe that is
  still ahead of the decoder, the decoder is flushed and restarted at that keyframe, skipping the
  decoding of everything in between. A seek that lands before the previous sample would re-decode
  from a keyframe already passed, which is what makes per-sample seeking slow on long GOPs, so it is
  never done.
* **Bounded.** Input size, frame size, duration, frame count and wall time (checked between packets
  and frames) are limited by :class:`VideoLimits`; every failure is a :class:`VideoError` carrying an
  HTTP status, never a raw PyAV exception.

Frame indices are 0-based in presentation order over the packets of the first video stream (not
counting cover-art streams). If fewer frames decode than packets were counted (corrupt packets,
hidden frames), a missing index is served by the nearest earlier decoded frame (or the next one when
none precedes it) and a warning says so.

Rotation: ``VideoInfo.rotation`` is FFmpeg's display-matrix angle, i.e. how many degrees
COUNTERCLOCKWISE the stored picture must be turned for display (what ``ffmpeg -display_rotation``
writes; a phone filming upright usually stores 270, the legacy ``rotate=90`` tag). Frames are
returned upright (``numpy.rot90``). Mirroring display matrices are not handled.

Still images are rejected with :class:`NotAVideoError` (415): FFmpeg opens a PNG/JPEG/WebP/BMP/...
as a one-frame "video" through its ``image2``/``*_pipe`` demuxers, and an audio file with cover art
has a still-picture video stream. GIF (its own ``gif`` demuxer) is accepted: animated GIFs are clips;
a one-frame GIF then decodes as a one-frame video.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

__all__ = [
    "DecodeTimeoutError",
    "DecodedVideo",
    "NotAVideoError",
    "UndecodableVideoError",
    "VideoError",
    "VideoInfo",
    "VideoLimitError",
    "VideoLimits",
    "probe_and_decode",
    "resize_short_side_center_crop",
    "three_crops",
]

# One resize filter everywhere (decode-time resize and array resize): libswscale bilinear, which
# widens its kernel when downscaling (anti-aliased) and is deterministic.
_INTERPOLATION = "BILINEAR"
# Skip ahead only when at least this many packets are jumped over (a restart costs a decoder flush).
_MIN_SKIP_PACKETS = 2
_STILL_IMAGE_FORMATS = {"image2", "image2pipe", "tty"}
_WEBM_CODECS = {"vp8", "vp9", "av1", "opus", "vorbis"}

_AV_ERRORS: tuple[type[BaseException], ...] = (
    av.error.FFmpegError,
    ValueError,
    EOFError,
    OSError,
    RuntimeError,
    IndexError,
    UnicodeDecodeError,
)


# --------------------------------------------------------------------------------------------- errors
class VideoError(Exception):
    """A clip that cannot be served; ``status_code`` is the HTTP status, ``message`` says why."""

    status_code = 422

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class NotAVideoError(VideoError):
    """Not a media container, a still image, or no video stream (415 Unsupported Media Type)."""

    status_code = 415


class UndecodableVideoError(VideoError):
    """A video container whose video cannot be decoded: truncated, corrupt, zero frames (422)."""

    status_code = 422


class VideoLimitError(VideoError):
    """A configured limit was exceeded (422; 413 for the input size).

    ``limit`` is the :class:`VideoLimits` field name, ``value`` the measured value, ``maximum`` the
    configured limit, so a caller can name its own setting.
    """

    status_code = 422

    def __init__(self, what: str, limit: str, value: float, maximum: float, status_code: int | None = None):
        super().__init__(
            f"{what}: {_fmt(value)} exceeds the limit of {_fmt(maximum)} (setting {limit})", status_code
        )
        self.limit, self.value, self.maximum = limit, value, maximum


class DecodeTimeoutError(VideoError):
    """Probing and decoding took longer than ``VideoLimits.timeout_s`` (422)."""

    status_code = 422


def _fmt(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


# ------------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 4096 * 2304
    max_duration_s: float = 600.0
    max_decoded_frames: int = 100_000
    timeout_s: float = 20.0


@dataclass(frozen=True)
class VideoInfo:
    container: str  # short name: mp4, mov, webm, mkv, avi, ... (else FFmpeg's format name)
    codec: str  # FFmpeg decoder name: h264, hevc, vp9, mpeg4, mjpeg, ...
    width: int  # display width (after rotation), full resolution
    height: int  # display height (after rotation), full resolution
    fps: float  # stream average frame rate, else frames / duration
    duration_s: float
    frames: int  # frames counted by demuxing; the range of the sample indices
    rotation: int  # 0/90/180/270, counterclockwise, as FFmpeg's display matrix (see module docstring)


@dataclass
class DecodedVideo:
    info: VideoInfo
    clips: list[np.ndarray]  # one (T, H, W, 3) uint8 RGB array per clip, upright
    indices: list[list[int]]  # the frame indices asked for, per clip
    timestamps_s: list[list[float]]  # presentation time of the frame actually returned, per clip
    warnings: list[str] = field(default_factory=list)
    # cost counters: packets, frames_decoded, frames_converted, skips (decoder restarts at a keyframe)
    stats: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- decoding
class _Deadline:
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s

    def check(self, stage: str) -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeoutError(
                f"decoding took longer than {self.timeout_s:g} s (setting timeout_s) while {stage}"
            )


def probe_and_decode(
    source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO,
    choose_indices: Callable[[int], Sequence[Sequence[int]]],
    limits: VideoLimits = VideoLimits(),
    *,
    resize_short_side: int | None = None,
) -> DecodedVideo:
    """Open ``source`` once, count its frames, ask ``choose_indices(n)`` for one index list per clip,
    decode those frames and return them as upright RGB arrays.

    ``source``: a path, the bytes of a file, or a readable binary file object. ``resize_short_side``:
    scale every returned frame so its shorter side has this length (aspect kept), inside the YUV->RGB
    conversion. Raises a :class:`VideoError` subclass for anything wrong with the clip;
    ``FileNotFoundError`` for a missing path; ``ValueError`` if ``choose_indices`` returns indices
    outside ``[0, n-1]`` (a caller bug).
    """
    deadline = _Deadline(limits.timeout_s)
    if resize_short_side is not None and resize_short_side <= 0:
        raise ValueError(f"resize_short_side must be positive, got {resize_short_side}")
    fileobj = _as_input(source, limits)
    try:
        # max_pixels reaches FFmpeg's decoders while it probes the streams, so a header claiming a
        # 16000x16000 picture is refused before a frame buffer of that size is allocated.
        container = av.open(
            fileobj,
            mode="r",
            metadata_errors="ignore",
            timeout=limits.timeout_s,
            options=_decoder_options(limits),
        )
    except _AV_ERRORS as exc:
        deadline.check("opening the file")  # an open aborted by the timeout is a timeout
        raise NotAVideoError(
            f"not a readable video file ({_reason(exc)}): not a video, or truncated before its header"
        ) from exc
    try:
        return _decode(container, choose_indices, limits, deadline, resize_short_side)
    finally:
        with contextlib.suppress(*_AV_ERRORS):
            container.close()


def _as_input(source, limits: VideoLimits):
    if isinstance(source, bytes | bytearray | memoryview):
        size = memoryview(source).nbytes
        if size == 0:
            raise NotAVideoError("empty input: not a video file")
        if size > limits.max_bytes:
            raise VideoLimitError("input size in bytes", "max_bytes", size, limits.max_bytes, 413)
        return io.BytesIO(source)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        size = os.path.getsize(path)
        if size == 0:
            raise NotAVideoError("empty input: not a video file")
        if size > limits.max_bytes:
            raise VideoLimitError("input size in bytes", "max_bytes", size, limits.max_bytes, 413)
        return path
    if hasattr(source, "read"):
        if source.seekable():
            pos = source.tell()
            size = source.seek(0, io.SEEK_END) - pos
            source.seek(pos)
            if size <= 0:
                raise NotAVideoError("empty input: not a video file")
            if size > limits.max_bytes:
                raise VideoLimitError("input size in bytes", "max_bytes", size, limits.max_bytes, 413)
        return source
    raise TypeError(f"unsupported source type {type(source).__name__}")


def _decoder_options(limits: VideoLimits) -> dict[str, str]:
    """FFmpeg's own pixel cap, a backstop against absurd headers (16000x16000) allocating before our
    exact ``max_pixels`` check runs. FFmpeg counts *aligned* buffers (480x320 H.264 needs 512x320, a
    100-pixel-wide frame 128), so it gets headroom; otherwise a video exactly at the limit fails."""
    return {"max_pixels": str(max(4 * limits.max_pixels, 1 << 22))}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return f"{type(exc).__name__}: {exc}"


def _pick_video_stream(container) -> av.video.stream.VideoStream:
    fmt = container.format.name
    if fmt in _STILL_IMAGE_FORMATS or fmt.endswith("_pipe"):
        raise NotAVideoError(f"a still image ({fmt.removesuffix('_pipe')}), not a video")
    for stream in container.streams.video:
        disp = int(stream.disposition)
        if disp & (int(av.stream.Disposition.attached_pic) | int(av.stream.Disposition.still_image)):
            continue
        if stream.codec_context is None:  # FFmpeg has no decoder for it (unknown or garbled codec id)
            raise NotAVideoError("the video stream's codec is unknown or not supported")
        return stream
    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
    raise NotAVideoError(f"no video stream in this {fmt} file (found: {', '.join(kinds)})")


def _short_container_name(container, codecs: set[str]) -> str:
    name = container.format.name
    if name.startswith("mov,mp4"):
        brand = str(container.metadata.get("major_brand", "")).strip()
        return "mov" if brand == "qt" else "mp4"
    if name == "matroska,webm":
        return "webm" if codecs <= _WEBM_CODECS else "mkv"
    return name.split(",")[0]


@dataclass
class _Packets:
    packets: list  # av.Packet in decode order (empty/discarded ones dropped)
    rank: list[int] | None  # presentation index of each packet; None: unknown (no usable pts)
    pts_rank: dict[int, int]  # pts -> presentation index
    sorted_pts: list[int]
    keyframes: list[int]  # packet positions of keyframes, increasing
    duration_s: float | None


def _demux(container, stream, limits: VideoLimits, deadline: _Deadline, warnings: list[str]) -> _Packets:
    packets = []
    last_duration = 0
    try:
        for packet in container.demux(stream):
            deadline.check("counting frames")
            if packet.size == 0 or packet.is_discard:
                continue
            packets.append(packet)
            last_duration = packet.duration or last_duration
            if len(packets) > limits.max_decoded_frames:
                raise VideoLimitError(
                    "number of frames", "max_decoded_frames", len(packets), limits.max_decoded_frames
                )
    except _AV_ERRORS as exc:
        if not packets:
            raise UndecodableVideoError(f"cannot read the video stream ({_reason(exc)})") from exc
        warnings.append(f"stopped reading at packet {len(packets)} ({_reason(exc)}); file truncated?")

    pts = [p.pts for p in packets]
    rank: list[int] | None = None
    pts_rank: dict[int, int] = {}
    sorted_pts: list[int] = []
    duration_s = None
    tb = stream.time_base
    if packets and None not in pts and len(set(pts)) == len(pts):
        sorted_pts = sorted(pts)
        pts_rank = {p: i for i, p in enumerate(sorted_pts)}
        rank = [pts_rank[p] for p in pts]
        if tb:
            duration_s = float((sorted_pts[-1] + last_duration - sorted_pts[0]) * tb)
    elif packets:
        warnings.append("packets lack unique timestamps: frames numbered in decoding order, no skipping")
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    return _Packets(packets, rank, pts_rank, sorted_pts, keyframes, duration_s)


def _decode(container, choose_indices, limits, deadline, resize_short_side) -> DecodedVideo:
    warnings: list[str] = []
    stream = _pick_video_stream(container)
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width * height > limits.max_pixels:
        raise VideoLimitError(
            f"frame size {width}x{height} in pixels", "max_pixels", width * height, limits.max_pixels
        )
    header_duration = _header_duration(container, stream)
    if header_duration is not None and header_duration > limits.max_duration_s:
        raise VideoLimitError(
            "duration in seconds", "max_duration_s", header_duration, float(limits.max_duration_s)
        )

    pk = _demux(container, stream, limits, deadline, warnings)
    n = len(pk.packets)
    if n == 0:
        raise UndecodableVideoError("the video stream has no frames")
    duration_s = pk.duration_s if pk.duration_s is not None else header_duration
    if duration_s is not None and duration_s > limits.max_duration_s:
        raise VideoLimitError(
            "duration in seconds", "max_duration_s", duration_s, float(limits.max_duration_s)
        )
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    if fps <= 0 and duration_s:
        fps = n / duration_s
    if duration_s is None:
        duration_s = n / fps if fps > 0 else 0.0

    clips_idx = [[int(i) for i in clip] for clip in choose_indices(n)]
    for clip in clips_idx:
        bad = [i for i in clip if not 0 <= i < n]
        if bad:
            raise ValueError(f"choose_indices returned {bad} outside [0, {n - 1}]")
    needed = sorted({i for clip in clips_idx for i in clip})

    try:
        frames, times, rotation, stats = _decode_needed(
            stream, pk, needed, limits, deadline, resize_short_side, (width, height), warnings
        )
    except _AV_ERRORS as exc:
        raise UndecodableVideoError(f"cannot decode the video ({_reason(exc)})") from exc

    codecs = {s.codec_context.name for s in container.streams if s.codec_context is not None}
    disp_w, disp_h = (height, width) if rotation in (90, 270) else (width, height)
    info = VideoInfo(
        container=_short_container_name(container, codecs),
        codec=ctx.name,
        width=disp_w,
        height=disp_h,
        fps=fps,
        duration_s=float(duration_s),
        frames=n,
        rotation=rotation,
    )
    stats["packets"] = n
    clips = [np.stack([frames[i] for i in clip]) for clip in clips_idx]
    timestamps = [[times[i] for i in clip] for clip in clips_idx]
    return DecodedVideo(info, clips, clips_idx, timestamps, warnings, stats)


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _target_size(w: int, h: int, short: int | None) -> tuple[int, int]:
    if short is None:
        return w, h
    if w <= h:
        return short, max(1, round(h * short / w))
    return max(1, round(w * short / h)), short


def _normalize_rotation(deg: float) -> int:
    return (round(deg / 90) * 90) % 360


def _decode_needed(stream, pk: _Packets, needed, limits, deadline, resize_short_side, size, warnings):
    """Decode forward, converting only the frames in ``needed`` (sorted presentation indices).

    Returns ({index: upright RGB array}, {index: seconds}, rotation, stats)."""
    ctx = stream.codec_context
    ctx.thread_type = "AUTO"
    # The same cap for the decoder itself: a bitstream whose frames are larger than its container
    # header says fails to decode instead of allocating them.
    ctx.options = _decoder_options(limits)
    tb: Fraction | None = stream.time_base
    start_pts = pk.sorted_pts[0] if pk.sorted_pts else (stream.start_time or 0)
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    # One output size for every frame (frames of one clip are stacked), from the header, or from the
    # first converted frame when the header has no size.
    target = _target_size(*size, resize_short_side) if min(size) > 0 else None

    out: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    state = {
        "rotation": None,
        "decoded": 0,
        "converted": 0,
        "last": None,
    }  # last: (index, frame, converted or None)
    j = 0  # next needed position
    missing: list[int] = []

    def convert(frame) -> np.ndarray:
        nonlocal target
        if frame.width * frame.height > limits.max_pixels:
            raise VideoLimitError(
                f"frame size {frame.width}x{frame.height} in pixels",
                "max_pixels",
                frame.width * frame.height,
                limits.max_pixels,
            )
        if target is None:
            target = _target_size(frame.width, frame.height, resize_short_side)
        kwargs = {}
        if int(frame.color_range or 0):
            kwargs["src_color_range"] = int(frame.color_range)
        rgb = frame.reformat(
            width=target[0], height=target[1], format="rgb24", interpolation=_INTERPOLATION, **kwargs
        ).to_ndarray()
        k = (state["rotation"] or 0) // 90
        return np.rot90(rgb, k=k) if k else rgb

    def frame_time(frame, idx: int) -> float:
        if frame.pts is not None and tb:
            return float((frame.pts - start_pts) * tb)
        return idx / fps if fps > 0 else 0.0

    def give(idx: int, frame, cache: list) -> None:
        if cache[0] is None:
            cache[0] = convert(frame)
            state["converted"] += 1
        out[idx] = cache[0]
        times[idx] = cache[1]

    def on_frame(frame) -> bool:
        """Handle one decoded frame; True when every needed frame is done."""
        nonlocal j
        deadline.check("decoding")
        if state["rotation"] is None:
            state["rotation"] = _normalize_rotation(frame.rotation or 0)
        state["decoded"] += 1
        last = state["last"]
        idx = pk.pts_rank.get(frame.pts) if pk.rank is not None and frame.pts is not None else None
        if idx is None:
            idx = last[0] + 1 if last is not None else 0
        cache = [None, frame_time(frame, idx)]
        while j < len(needed) and needed[j] < idx:  # never decoded: use the previous frame
            if last is not None:
                give(needed[j], last[1], last[2])
            else:
                give(needed[j], frame, cache)
            missing.append(needed[j])
            j += 1
        if j < len(needed) and needed[j] == idx:
            give(idx, frame, cache)
            j += 1
        state["last"] = (idx, frame, cache)
        return j >= len(needed)

    packets, rank, keyframes = pk.packets, pk.rank, pk.keyframes
    pos, kf_ptr, done, skips = 0, 0, not needed, 0
    while not done and pos < len(packets):
        deadline.check("decoding")
        if rank is not None and j < len(needed):
            # latest keyframe ahead of the cursor whose frame precedes-or-is the next needed one
            while kf_ptr < len(keyframes) and keyframes[kf_ptr] <= pos:
                kf_ptr += 1
            best = None
            k = kf_ptr
            while k < len(keyframes) and rank[keyframes[k]] <= needed[j]:
                best = keyframes[k]
                k += 1
            if best is not None and best - pos >= _MIN_SKIP_PACKETS:
                ctx.flush_buffers()
                pos, kf_ptr, skips = best, k, skips + 1
        try:
            decoded = ctx.decode(packets[pos])
        except av.error.InvalidDataError:
            decoded = []  # a corrupt packet: its frame goes missing, the next ones may still decode
        pos += 1
        for frame in decoded:
            if on_frame(frame):
                done = True
                break
    if not done:
        try:
            for frame in ctx.decode(None):
                if on_frame(frame):
                    break
        except (av.error.InvalidDataError, EOFError):
            pass
    if state["last"] is None:
        raise UndecodableVideoError("no frame of the video could be decoded (corrupt or truncated?)")
    last = state["last"]
    while j < len(needed):  # fewer frames decoded than counted
        give(needed[j], last[1], last[2])
        missing.append(needed[j])
        j += 1
    if missing:
        warnings.append(f"{state['decoded']} frames decoded, {len(packets)} packets counted")
        warnings.append(
            f"{len(missing)} sampled frame(s) did not decode and were replaced by a neighbour: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        )
    stats = {"frames_decoded": state["decoded"], "frames_converted": state["converted"], "skips": skips}
    return out, times, state["rotation"] or 0, stats


# ---------------------------------------------------------------------------------------- resizing
def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return vf.reformat(width=width, height=height, format="rgb24", interpolation=_INTERPOLATION).to_ndarray()


def _resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    tw, th = _target_size(w, h, short_side)
    if (tw, th) == (w, h):
        return frames
    return np.stack([_resize(f, tw, th) for f in frames])


def resize_short_side_center_crop(frames: np.ndarray, short_side: int, crop_size: int) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames so the shorter side is ``short_side`` (aspect kept), then take
    the centred ``crop_size`` x ``crop_size`` square (offsets rounded as torchvision's CenterCrop).
    Returns (T, crop_size, crop_size, 3) uint8."""
    if crop_size > short_side:
        raise ValueError(f"crop_size {crop_size} is larger than short_side {short_side}")
    resized = _resize_short_side(frames, short_side)
    h, w = resized.shape[1:3]
    top, left = round((h - crop_size) / 2), round((w - crop_size) / 2)
    return np.ascontiguousarray(resized[:, top : top + crop_size, left : left + crop_size])


def three_crops(frames: np.ndarray, short_side: int, crop_size: int) -> np.ndarray:
    """The paper's 3-crop test view: resize the shorter side to ``short_side``, take three
    ``short_side`` x ``short_side`` squares along the longer side (start, centre, end: left/centre/right
    for landscape, top/centre/bottom for portrait) and resize each to ``crop_size``.

    Offsets follow the reference GroupFullResSample: ``step = (long - short) // 4`` and squares at
    ``0``, ``2*step``, ``4*step``. Returns (3, T, crop_size, crop_size, 3) uint8."""
    resized = _resize_short_side(frames, short_side)
    h, w = resized.shape[1:3]
    s = min(h, w)
    step = (max(h, w) - s) // 4
    views = []
    for off in (0, 2 * step, 4 * step):
        sq = resized[:, off : off + s, :s] if h > w else resized[:, :s, off : off + s]
        views.append(np.stack([_resize(f, crop_size, crop_size) for f in sq]))
    return np.stack(views)
