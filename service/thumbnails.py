"""Small JPEG thumbnails of the sampled frames, for people (the web page shows them).

Encoded with PyAV's ``mjpeg`` encoder (already a dependency for decoding), so no imaging library is
needed: every packet of the intra-only MJPEG encoder is one complete baseline JPEG file. A thumbnail
is a whole sampled frame, upright, before any crop (so it shows what the video holds, not one crop),
scaled to ``height`` pixels with its aspect ratio kept.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

__all__ = ["Thumbnails", "jpeg_thumbnails", "thumbnail_size"]

# The decoder's resize filter, so a thumbnail looks like the frames the model saw.
_INTERPOLATION = "BILINEAR"
# Full-range YUV 4:2:0: what baseline JPEG viewers (and browsers) expect from FFmpeg's mjpeg encoder.
_JPEG_PIX_FMT = "yuvj420p"


@dataclass(frozen=True)
class Thumbnails:
    width: int
    height: int
    clips: list[list[str]]  # base64 JPEG files, one list per clip, one entry per sampled frame


# FFmpeg's mjpeg encoder refuses wider pictures (JPEG stores sizes in 16 bits); a 65535x48 "video"
# is legal under max_pixels and would otherwise fail the request with a 500 (found by tests/fuzz.py).
_MAX_JPEG_SIDE = 65500


def thumbnail_size(frame_width: int, frame_height: int, height: int) -> tuple[int, int]:
    """(width, height) of the thumbnail of a ``frame_width`` x ``frame_height`` frame: ``height`` rows,
    width in proportion (at least 1); for a frame too wide for JPEG, the widest JPEG in proportion."""
    width = max(1, round(height * frame_width / frame_height))
    if width > _MAX_JPEG_SIDE:
        return _MAX_JPEG_SIDE, max(1, round(_MAX_JPEG_SIDE * frame_height / frame_width))
    return width, height


def jpeg_thumbnails(clips: Sequence[np.ndarray], height: int) -> Thumbnails:
    """One JPEG per frame of each (T, H, W, 3) uint8 RGB clip (every clip of a video has one frame size)."""
    if not clips or clips[0].ndim != 4:
        raise ValueError("expected at least one (T, H, W, 3) clip")
    frame_h, frame_w = clips[0].shape[1:3]
    width, height = thumbnail_size(frame_w, frame_h, height)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, _JPEG_PIX_FMT
    encoder.time_base = Fraction(1, 1)
    out: list[list[str]] = []
    pts = 0
    for clip in clips:
        encoded = []
        for rgb in clip:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(width, height, format=_JPEG_PIX_FMT, interpolation=_INTERPOLATION)
            frame.pts = pts
            pts += 1
            packets = encoder.encode(frame)
            if len(packets) != 1:  # intra-only, no delay: one packet per picture
                raise RuntimeError(f"mjpeg encoder returned {len(packets)} packets for one picture")
            encoded.append(base64.b64encode(bytes(packets[0])).decode("ascii"))
        out.append(encoded)
    return Thumbnails(width, height, out)
