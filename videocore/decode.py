"""Bounded video decoding shared by the service and the trainer.

The service and the trainer both read clips through :func:`probe_and_decode`, so a model is trained
and served on identical frames (same decoder, same frame numbering, same YUV->RGB conversion and
resize filter). Only numpy and PyAV are used.

Why it is built this way (each point was measured on real clips):

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
* **Let the decoder skip unsampled non-reference frames.** A packet whose frame no clip samples is
  decoded with ``skip_frame = "NONREF"``; a sampled one with ``"DEFAULT"``. A non-reference frame
  (most B-frames) is used by no other frame, so the sampled pixels cannot change (tests compare with
  a plain sequential decode on every container they make), and B-frame content decodes 40-50 % fewer
  frames. P-only H.264 and VP9 have no such frames and lose nothing.
* **Threads by policy, not FFmpeg's default.** FFmpeg starts one frame thread per CPU in every decode;
  with several decode workers that over-subscribes the CPUs and costs CPU time without lowering
  latency. The caller passes ``threads`` (:func:`threads_per_decode`: the CPUs divided among the
  decode workers); 1 decodes on the calling thread.
* **One scaler per decode.** ``frame.reformat`` builds a swscale context per frame; one
  ``VideoReformatter`` is reused for every frame of a decode. Presentation times are computed only
  for the frames returned.
* **Bounded.** Input size, frame size, duration, frame count and wall time (checked between packets
  and frames) are limited by :class:`VideoLimits`; every failure is a :class:`VideoError` subclass
  (:mod:`videocore.errors`), never a raw PyAV exception.

Frame indices are 0-based in presentation order over the packets of the first video stream (not
counting cover-art streams). If fewer frames decode than packets were counted (corrupt packets,
hidden frames), a missing index is served by the nearest earlier decoded frame (or the next one when
none precedes it) and a :class:`DecodeWarning` says so.

Edit lists: an MP4 trimmed without re-encoding (``ffmpeg -ss 1.3 -c copy``, phone trimming) starts
its edit list mid-GOP; FFmpeg's demuxer flags the packets before the cut ``is_discard``. They are
still sent to the decoder (the first shown frames reference them) but are not counted as frames,
get no index and are never returned, so frame 0 is the first frame FFmpeg itself presents.

Rotation: ``VideoInfo.rotation`` is FFmpeg's display-matrix angle, i.e. how many degrees
COUNTERCLOCKWISE the stored picture must be turned for display (what ``ffmpeg -display_rotation``
writes; a phone filming upright usually stores 270, the legacy ``rotate=90`` tag). Frames are
returned upright (``numpy.rot90``). Mirroring display matrices are not handled.

Still images are rejected with :class:`NotAVideoError`: FFmpeg opens a PNG/JPEG/WebP/BMP/...
as a one-frame "video" through its ``image2``/``*_pipe`` demuxers, and an audio file with cover art
has a still-picture video stream. GIF (its own ``gif`` demuxer) is accepted: animated GIFs are clips;
a one-frame GIF then decodes as a one-frame video.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, Any, BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videocore.errors import (
    DecodeTimeoutError,
    InputTooLargeError,
    NotAVideoError,
    UndecodableVideoError,
    VideoLimitError,
)
from videocore.views import INTERPOLATION, checked_output_size

__all__ = [
    "DecodeWarning",
    "DecodedVideo",
    "VideoInfo",
    "VideoLimits",
    "decode_windows",
    "probe_and_decode",
    "threads_per_decode",
]

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

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | IO[bytes]
IndexChooser = Callable[[int], Sequence[Sequence[int]]]
# decode_windows: the windows' index lists from the probed video (frame count, rate, duration known).
WindowChooser = Callable[["VideoInfo"], Sequence[Sequence[int]]]
# decode_windows: called with (window number, (T, H, W, 3) frames, presentation times) in window order.
WindowSink = Callable[[int, np.ndarray, list[float]], None]


# ------------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 100 * 1024 * 1024
    max_pixels: int = 4096 * 2304
    max_duration_s: float = 600.0
    max_decoded_frames: int = 100_000
    timeout_s: float = 20.0
    # Hostile-input bounds (0: no limit). max_frame_pixels and max_aspect_ratio bound a frame after
    # the resize (see views.checked_output_size); max_streams is FFmpeg's own cap while probing.
    max_frame_pixels: int = 0
    max_aspect_ratio: float = 0.0
    max_streams: int = 0
    # Called at every deadline check with the stage; may raise a VideoError (the service's fair
    # share of the decoder and its per-request budget live there).
    checkpoint: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


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


@dataclass(frozen=True)
class DecodeWarning:
    """Something about the clip that did not stop decoding but changed what came back.

    ``kind`` is one of :data:`WARNING_KINDS` (stable, for counting); ``message`` is for people.
    """

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


# frames_substituted: sampled frames that never decoded were served by a neighbouring frame;
# truncated: the container stopped before its end (the frames read so far are used);
# decode_order: no usable timestamps, frames are numbered in decoding order.
WARNING_KINDS = ("frames_substituted", "truncated", "decode_order")


@dataclass
class DecodedVideo:
    info: VideoInfo
    clips: list[np.ndarray]  # one (T, H, W, 3) uint8 RGB array per clip, upright
    indices: list[list[int]]  # the frame indices asked for, per clip
    timestamps_s: list[list[float]]  # presentation time of the frame actually returned, per clip
    warnings: list[DecodeWarning] = field(default_factory=list)
    # cost counters: packets (frames counted), discarded (packets decoded only as references: an edit
    # list's pre-roll), frames_decoded, frames_converted, skips (decoder restarts at a keyframe)
    stats: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- decoding
class _Deadline:
    def __init__(self, timeout_s: float, checkpoint: Callable[[str], None] | None = None) -> None:
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s
        self.checkpoint = checkpoint

    def check(self, stage: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(stage)
        if time.monotonic() > self.end:
            raise DecodeTimeoutError(
                f"decoding took longer than {self.timeout_s:g} s (setting timeout_s) while {stage}"
            )


def probe_and_decode(
    source: Source,
    choose_indices: IndexChooser,
    limits: VideoLimits = VideoLimits(),
    *,
    resize_short_side: int | None = None,
    threads: int | None = None,
    skip_unsampled: bool = True,
) -> DecodedVideo:
    """Open ``source`` once, count its frames, ask ``choose_indices(n)`` for one index list per clip,
    decode those frames and return them as upright RGB arrays.

    ``source``: a path, the bytes of a file, or a readable binary file object. ``resize_short_side``:
    scale every returned frame so its shorter side has this length (aspect kept), inside the YUV->RGB
    conversion. ``threads``: FFmpeg threads for this decode and its conversions (1: single-threaded,
    n > 1: frame and slice threads, at most n; None: FFmpeg's choice, as many as CPUs; see
    :func:`threads_per_decode`). ``skip_unsampled``: let the decoder skip non-reference frames that no
    clip samples (the returned pixels are the same; False only to measure what it saves).
    Raises a :class:`~videocore.errors.VideoError` subclass for anything wrong with the
    clip; ``FileNotFoundError`` for a missing path; ``ValueError`` if ``choose_indices`` returns
    indices outside ``[0, n-1]`` (a caller bug).
    """
    return _open_and_decode(
        source,
        lambda info: choose_indices(info.frames),
        None,
        limits,
        _Plan(resize_short_side, threads, skip_unsampled),
    )


def decode_windows(
    source: Source,
    choose_windows: WindowChooser,
    on_window: WindowSink,
    limits: VideoLimits = VideoLimits(),
    *,
    resize_short_side: int | None = None,
    threads: int | None = None,
) -> DecodedVideo:
    """One decode pass over ``source`` for a timeline of (possibly overlapping) windows, in bounded memory.

    ``choose_windows(info)`` gets the probed :class:`VideoInfo` (frame count, rate, duration; its
    ``rotation`` is 0 until the first frame decodes) and returns one index list per window, windows in
    time order; it may raise (a limit on the number of windows). Each window is handed to
    ``on_window(k, frames, timestamps_s)`` from the decoding thread as soon as its last frame is
    decoded, and frames that no later window uses are dropped then: memory holds the frames of the
    windows in progress, not of the whole video. Every frame is decoded at most once and converted at
    most once, even when windows share it (the decoding is :func:`probe_and_decode`'s). ``on_window``
    may raise to stop decoding (a cancelled request); the exception propagates. Returns the
    :class:`DecodedVideo` with ``clips`` empty (the frames went to ``on_window``)."""
    return _open_and_decode(
        source, choose_windows, on_window, limits, _Plan(resize_short_side, threads, True)
    )


def _open_and_decode(
    source: Source,
    choose: WindowChooser,
    on_window: WindowSink | None,
    limits: VideoLimits,
    plan: _Plan,
) -> DecodedVideo:
    resize_short_side, threads = plan.resize_short_side, plan.threads
    deadline = _Deadline(limits.timeout_s, limits.checkpoint)
    if resize_short_side is not None and resize_short_side <= 0:
        raise ValueError(f"resize_short_side must be positive, got {resize_short_side}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be positive or None, got {threads}")
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
        return _decode(container, choose, on_window, limits, deadline, plan)
    finally:
        with contextlib.suppress(*_AV_ERRORS):
            container.close()


def threads_per_decode(decode_workers: int, cpus: int | None = None) -> int:
    """FFmpeg threads for one decode when ``decode_workers`` decodes run in parallel on ``cpus`` CPUs
    (default: the CPUs this process may use): an equal share, at least 1.

    FFmpeg's default (as many frame threads as CPUs in every decode) over-subscribes the CPUs as soon
    as two decodes run at once: on 2 CPUs with 2 decode workers, frame threads cost CPU time (thread
    hand-off, per-thread frame buffers, the decoder's extra delay) without lowering latency.
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, decode_workers))


@dataclass(frozen=True)
class _Plan:
    """How to decode (the caller's choices that do not change which frames come back)."""

    resize_short_side: int | None
    threads: int | None
    skip_unsampled: bool


def _check_size(size: int, limits: VideoLimits) -> None:
    if size <= 0:
        raise NotAVideoError("empty input: not a video file")
    if size > limits.max_bytes:
        raise InputTooLargeError(size, limits.max_bytes)


def _as_input(source: Source, limits: VideoLimits) -> str | IO[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        _check_size(memoryview(source).nbytes, limits)
        return io.BytesIO(source)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        _check_size(os.path.getsize(path), limits)
        return path
    if hasattr(source, "read"):
        if source.seekable():
            pos = source.tell()
            size = source.seek(0, io.SEEK_END) - pos
            source.seek(pos)
            _check_size(size, limits)
        return source
    raise TypeError(f"unsupported source type {type(source).__name__}")


def _decoder_options(limits: VideoLimits) -> dict[str, str]:
    """FFmpeg's own pixel cap, a backstop against absurd headers (16000x16000) allocating before our
    exact ``max_pixels`` check runs. FFmpeg counts *aligned* buffers (480x320 H.264 needs 512x320, a
    100-pixel-wide frame 128), so it gets headroom; otherwise a video exactly at the limit fails."""
    options = {"max_pixels": str(max(4 * limits.max_pixels, 1 << 22))}
    if limits.max_streams:
        options["max_streams"] = str(limits.max_streams)
    return options


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return f"{type(exc).__name__}: {exc}"


def _pick_video_stream(container: Any) -> Any:
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


def _short_container_name(container: Any, codecs: set[str]) -> str:
    name: str = container.format.name
    if name.startswith("mov,mp4"):
        brand = str(container.metadata.get("major_brand", "")).strip()
        return "mov" if brand == "qt" else "mp4"
    if name == "matroska,webm":
        return "webm" if codecs <= _WEBM_CODECS else "mkv"
    return name.split(",")[0]


# Rank of a packet that is decoded only as a reference (an edit list's pre-roll): no frame index.
_DISCARDED = -1


@dataclass
class _Packets:
    """The video packets in decode order, and which presentation index each one's frame has.

    Packets FFmpeg flags ``is_discard`` (what an MP4 edit list that starts mid-GOP marks, as
    ``ffmpeg -ss ... -c copy`` and phone trimming write) are kept: the decoder needs them as references
    for the first shown frames, and drops their own frames itself. They are not counted as frames and
    get rank :data:`_DISCARDED`.
    """

    packets: list[Any]  # av.Packet in decode order, empty ones dropped, discarded ones kept
    frames: int  # packets that are not discarded: the frames of the clip
    rank: list[int] | None  # presentation index of each packet (_DISCARDED); None: no usable pts
    pts_rank: dict[int, int]  # pts -> presentation index, counted frames only
    first_pts: int | None  # the first counted frame's pts
    keyframes: list[int]  # positions of counted keyframes, increasing
    duration_s: float | None


def _read_packets(
    container: Any, stream: Any, limits: VideoLimits, deadline: _Deadline, warnings: list[DecodeWarning]
) -> tuple[list[Any], int]:
    packets: list[Any] = []
    last_duration = 0
    try:
        for packet in container.demux(stream):
            deadline.check("counting frames")
            if packet.size == 0:
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
        warnings.append(
            DecodeWarning(
                "truncated", f"stopped reading at packet {len(packets)} ({_reason(exc)}); file truncated?"
            )
        )
    return packets, last_duration


def _demux(
    container: Any, stream: Any, limits: VideoLimits, deadline: _Deadline, warnings: list[DecodeWarning]
) -> _Packets:
    packets, last_duration = _read_packets(container, stream, limits, deadline, warnings)
    counted = [p for p in packets if not p.is_discard]
    pts = [p.pts for p in counted]
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe and not p.is_discard]
    pk = _Packets(packets, len(counted), None, {}, None, keyframes, None)
    if counted and None not in pts and len(set(pts)) == len(pts):
        sorted_pts = sorted(pts)
        pk.pts_rank = {p: i for i, p in enumerate(sorted_pts)}
        pk.rank = [_DISCARDED if p.is_discard else pk.pts_rank[p.pts] for p in packets]
        pk.first_pts = sorted_pts[0]
        if stream.time_base:
            pk.duration_s = float((sorted_pts[-1] + last_duration - sorted_pts[0]) * stream.time_base)
    elif counted:
        warnings.append(
            DecodeWarning("decode_order", "packets lack unique timestamps: frames numbered in decoding order")
        )
    return pk


def _check_duration(duration_s: float | None, limits: VideoLimits) -> None:
    if duration_s is not None and duration_s > limits.max_duration_s:
        raise VideoLimitError(
            "duration in seconds", "max_duration_s", duration_s, float(limits.max_duration_s)
        )


def _check_header(container: Any, stream: Any, limits: VideoLimits) -> tuple[int, int, float | None]:
    """Refuse what the header already shows is over a limit: (width, height, duration or None)."""
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    if width * height > limits.max_pixels:
        raise VideoLimitError(
            f"frame size {width}x{height} in pixels", "max_pixels", width * height, limits.max_pixels
        )
    header_duration = _header_duration(container, stream)
    _check_duration(header_duration, limits)
    return width, height, header_duration


def _rate_and_duration(stream: Any, frames: int, duration_s: float | None) -> tuple[float, float]:
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    if fps <= 0 and duration_s:
        fps = frames / duration_s
    if duration_s is None:
        duration_s = frames / fps if fps > 0 else 0.0
    return fps, float(duration_s)


def _chosen_indices(choose: WindowChooser, info: VideoInfo) -> list[list[int]]:
    frames = info.frames
    clips_idx = [[int(i) for i in clip] for clip in choose(info)]
    for clip in clips_idx:
        bad = [i for i in clip if not 0 <= i < frames]
        if bad:
            raise ValueError(f"choose_indices returned {bad} outside [0, {frames - 1}]")
    return clips_idx


def _decode(
    container: Any,
    choose: WindowChooser,
    on_window: WindowSink | None,
    limits: VideoLimits,
    deadline: _Deadline,
    plan: _Plan,
) -> DecodedVideo:
    warnings: list[DecodeWarning] = []
    stream = _pick_video_stream(container)
    width, height, header_duration = _check_header(container, stream, limits)
    if min(width, height) > 0:
        checked_output_size(
            width, height, plan.resize_short_side, limits.max_aspect_ratio, limits.max_frame_pixels
        )
    pk = _demux(container, stream, limits, deadline, warnings)
    n = pk.frames
    if n == 0:
        raise UndecodableVideoError("the video stream has no frames")
    duration_s = pk.duration_s if pk.duration_s is not None else header_duration
    _check_duration(duration_s, limits)
    fps, duration_s = _rate_and_duration(stream, n, duration_s)
    codecs = {s.codec_context.name for s in container.streams if s.codec_context is not None}

    def video_info(rotation: int) -> VideoInfo:
        disp_w, disp_h = (height, width) if rotation in (90, 270) else (width, height)
        return VideoInfo(
            container=_short_container_name(container, codecs),
            codec=stream.codec_context.name,
            width=disp_w,
            height=disp_h,
            fps=fps,
            duration_s=duration_s,
            frames=n,
            rotation=rotation,
        )

    clips_idx = _chosen_indices(choose, video_info(0))
    decoder = _SampledFrameDecoder(
        stream, pk, sorted({i for clip in clips_idx for i in clip}), limits, deadline, plan
    )
    emitter = None if on_window is None else _WindowEmitter(clips_idx, decoder, on_window)
    decoder.listener = emitter
    try:
        decoder.run((width, height))
    except _AV_ERRORS as exc:
        raise UndecodableVideoError(f"cannot decode the video ({_reason(exc)})") from exc
    warnings.extend(decoder.warnings())
    info = video_info(decoder.rotation or 0)
    if emitter is not None:
        clips: list[np.ndarray] = []
        timestamps = emitter.timestamps
    else:
        clips = [np.stack([decoder.out[i] for i in clip]) for clip in clips_idx]
        timestamps = [[decoder.times[i] for i in clip] for clip in clips_idx]
    stats = {**decoder.stats(), "packets": n, "discarded": len(pk.packets) - n}
    return DecodedVideo(info, clips, clips_idx, timestamps, warnings, stats)


class _WindowEmitter:
    """Hands each window to the sink once its last frame is converted (windows in order), then drops
    the frames no later window uses. Called by the decoder after every needed frame it hands out;
    needed frames are handed out in increasing index order."""

    def __init__(self, windows: list[list[int]], decoder: _SampledFrameDecoder, sink: WindowSink) -> None:
        self.windows = windows
        self.decoder = decoder
        self.sink = sink
        self.next = 0
        self.timestamps: list[list[float]] = []
        # the lowest frame any window from k on uses: frames below it can go once window k-1 is out
        self.floor = [0] * (len(windows) + 1)
        self.floor[-1] = 1 << 62
        for k in range(len(windows) - 1, -1, -1):
            self.floor[k] = min(min(windows[k], default=1 << 62), self.floor[k + 1])
        self.kept: deque[int] = deque()  # indices in decoder.out, increasing

    def __call__(self, index: int) -> None:
        self.kept.append(index)
        out, times = self.decoder.out, self.decoder.times
        while self.next < len(self.windows) and max(self.windows[self.next], default=-1) <= index:
            window = self.windows[self.next]
            stamps = [times[i] for i in window]
            self.timestamps.append(stamps)
            self.sink(self.next, np.stack([out[i] for i in window]), stamps)
            self.next += 1
            floor = self.floor[self.next]
            while self.kept and self.kept[0] < floor:
                out.pop(self.kept.popleft(), None)


def _header_duration(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration / 1_000_000)
    return None


def _normalize_rotation(deg: float) -> int:
    return (round(deg / 90) * 90) % 360


@dataclass
class _Seen:
    """A decoded frame, its presentation index, and its RGB conversion once made."""

    index: int
    frame: Any
    rgb: np.ndarray | None = None


class _SampledFrameDecoder:
    """Decode forward, converting only the frames in ``needed`` (sorted presentation indices).

    After :meth:`run`, ``out`` maps each needed index to an upright RGB array and ``times`` to the
    presentation time of the frame that was returned for it.
    """

    def __init__(
        self,
        stream: Any,
        packets: _Packets,
        needed: list[int],
        limits: VideoLimits,
        deadline: _Deadline,
        plan: _Plan,
    ) -> None:
        self.ctx = stream.codec_context
        self.pk = packets
        self.needed = needed
        self.limits = limits
        self.deadline = deadline
        self.resize_short_side = plan.resize_short_side
        self.plan = plan
        # Presentation indices whose packets must produce their frame; every other packet may be skipped
        # by the decoder when nothing references it (skip_frame NONREF). Unknown ranks: skip nothing.
        self.sampled = set(needed) if plan.skip_unsampled and packets.rank is not None else None
        self.skip_mode = "DEFAULT"
        # One scaler for the whole decode (frame.reformat would build one per frame).
        self.reformatter = VideoReformatter()
        self.time_base: Fraction | None = stream.time_base
        self.start_pts = packets.first_pts if packets.first_pts is not None else (stream.start_time or 0)
        self.fps = float(stream.average_rate) if stream.average_rate else 0.0
        # One output size for every frame (frames of one clip are stacked), from the header, or from
        # the first converted frame when the header has no size.
        self.target: tuple[int, int] | None = None
        self.rotation: int | None = None
        self.next_needed = 0  # position in ``needed`` of the next frame to hand out
        self.last: _Seen | None = None
        self.decoded = 0
        self.converted = 0
        self.skips = 0
        self.missing: list[int] = []
        self.ended_at: int | None = None  # last frame index decoded, when that was before a sampled one
        self.out: dict[int, np.ndarray] = {}
        self.times: dict[int, float] = {}
        self.listener: Callable[[int], None] | None = None  # told every needed index handed out

    # -- the decode loop
    def run(self, header_size: tuple[int, int]) -> None:
        self._set_threads()
        # The same cap for the decoder itself: a bitstream whose frames are larger than its container
        # header says fails to decode instead of allocating them.
        self.ctx.options = _decoder_options(self.limits)
        if min(header_size) > 0:
            self.target = self._output_size(*header_size)
        done = self._decode_packets() if self.needed else True
        if not done:
            self._drain()
        if self.last is None:
            raise UndecodableVideoError("no frame of the video could be decoded (corrupt or truncated?)")
        if self.next_needed < len(self.needed):  # the stream ended before the last sampled frames
            self.ended_at = self.last.index
        while self.next_needed < len(self.needed):
            self._give_missing(self.last)

    def _decode_packets(self) -> bool:
        """Feed packets to the decoder; True once every needed frame is handed out."""
        packets = self.pk.packets
        pos, kf_ptr = 0, 0
        while pos < len(packets):
            self.deadline.check("decoding")
            pos, kf_ptr = self._skip_ahead(pos, kf_ptr)
            self._set_skip(pos)
            try:
                frames = self.ctx.decode(packets[pos])
            except av.error.InvalidDataError:
                frames = []  # a corrupt packet: its frame goes missing, the next ones may still decode
            pos += 1
            if any(self._on_frame(frame) for frame in frames):
                return True
        return False

    def _set_threads(self) -> None:
        threads = self.plan.threads
        if threads is None:
            self.ctx.thread_type = "AUTO"
        elif threads == 1:
            self.ctx.thread_count = 1
        else:
            self.ctx.thread_type = "AUTO"
            self.ctx.thread_count = threads

    def _set_skip(self, pos: int) -> None:
        """Decode the packet at ``pos`` fully when its frame is sampled, else let the decoder skip it
        if no other frame references it. A non-reference frame's pixels are never used by another
        frame, so skipping it cannot change a sampled frame."""
        if self.sampled is None or self.pk.rank is None:
            return
        mode = "DEFAULT" if self.pk.rank[pos] in self.sampled else "NONREF"
        if mode != self.skip_mode:
            self.ctx.skip_frame = mode
            self.skip_mode = mode

    def _skip_ahead(self, pos: int, kf_ptr: int) -> tuple[int, int]:
        """Restart at the latest keyframe ahead of ``pos`` that is not after the next needed frame."""
        rank, keyframes = self.pk.rank, self.pk.keyframes
        if rank is None or self.next_needed >= len(self.needed):
            return pos, kf_ptr
        while kf_ptr < len(keyframes) and keyframes[kf_ptr] <= pos:
            kf_ptr += 1
        best = None
        k = kf_ptr
        while k < len(keyframes) and rank[keyframes[k]] <= self.needed[self.next_needed]:
            best = keyframes[k]
            k += 1
        if best is not None and best - pos >= _MIN_SKIP_PACKETS:
            self.ctx.flush_buffers()
            self.skips += 1
            return best, k
        return pos, kf_ptr

    def _drain(self) -> None:
        try:
            for frame in self.ctx.decode(None):
                if self._on_frame(frame):
                    break
        except (av.error.InvalidDataError, EOFError):
            pass

    # -- per frame
    def _on_frame(self, frame: Any) -> bool:
        """Handle one decoded frame; True when every needed frame is done."""
        self.deadline.check("decoding")
        if self.rotation is None:
            self.rotation = _normalize_rotation(frame.rotation or 0)
        self.decoded += 1
        idx = self._frame_index(frame)
        if idx is None:
            return False
        seen = _Seen(idx, frame)
        while self.next_needed < len(self.needed) and self.needed[self.next_needed] < idx:
            # never decoded: served by the previous frame, or by this one when none came before
            self._give_missing(self.last if self.last is not None else seen)
        if self.next_needed < len(self.needed) and self.needed[self.next_needed] == idx:
            self._give(idx, seen)
            self.next_needed += 1
        self.last = seen
        return self.next_needed >= len(self.needed)

    def _frame_index(self, frame: Any) -> int | None:
        """The frame's presentation index; None for a frame before the first counted one (an edit
        list's pre-roll that the decoder did not drop itself)."""
        pk = self.pk
        if pk.rank is not None and frame.pts is not None:
            idx = pk.pts_rank.get(frame.pts)
            if idx is not None:
                return idx
            if pk.first_pts is not None and frame.pts < pk.first_pts:
                return None
        return self.last.index + 1 if self.last is not None else 0

    def _give_missing(self, seen: _Seen) -> None:
        index = self.needed[self.next_needed]
        self._give(index, seen)
        self.missing.append(index)
        self.next_needed += 1

    def _give(self, index: int, seen: _Seen) -> None:
        if seen.rgb is None:
            seen.rgb = self._convert(seen.frame)
            self.converted += 1
        self.out[index] = seen.rgb
        self.times[index] = self._frame_time(seen.frame, seen.index)
        if self.listener is not None:
            self.listener(index)

    def _frame_time(self, frame: Any, idx: int) -> float:
        if frame.pts is not None and self.time_base:
            return float((frame.pts - self.start_pts) * self.time_base)
        return idx / self.fps if self.fps > 0 else 0.0

    def _output_size(self, width: int, height: int) -> tuple[int, int]:
        lim = self.limits
        return checked_output_size(
            width, height, self.resize_short_side, lim.max_aspect_ratio, lim.max_frame_pixels
        )

    def _convert(self, frame: Any) -> np.ndarray:
        pixels = frame.width * frame.height
        if pixels > self.limits.max_pixels:
            raise VideoLimitError(
                f"frame size {frame.width}x{frame.height} in pixels",
                "max_pixels",
                pixels,
                self.limits.max_pixels,
            )
        if self.target is None:
            self.target = self._output_size(frame.width, frame.height)
        kwargs = {}
        if int(frame.color_range or 0):
            kwargs["src_color_range"] = int(frame.color_range)
        rgb: np.ndarray = self.reformatter.reformat(
            frame,
            width=self.target[0],
            height=self.target[1],
            format="rgb24",
            interpolation=INTERPOLATION,
            threads=self.plan.threads or 0,
            **kwargs,
        ).to_ndarray()
        k = (self.rotation or 0) // 90
        return np.rot90(rgb, k=k) if k else rgb

    # -- results
    def warnings(self) -> list[DecodeWarning]:
        if not self.missing:
            return []
        shown = f"{self.missing[:10]}{' ...' if len(self.missing) > 10 else ''}"
        ended = "" if self.ended_at is None else f"; decoding ended at frame {self.ended_at}"
        return [
            DecodeWarning(
                "frames_substituted",
                f"{len(self.missing)} sampled frame(s) of {self.pk.frames} did not decode and were "
                f"replaced by a neighbour: {shown}{ended}",
            )
        ]

    def stats(self) -> dict[str, int]:
        return {"frames_decoded": self.decoded, "frames_converted": self.converted, "skips": self.skips}
