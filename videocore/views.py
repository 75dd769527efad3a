"""The resize and crop views a model sees, shared by training, evaluation and serving.

One resize filter everywhere (decode-time resize and array resize): libswscale bilinear, which widens
its kernel when downscaling (anti-aliased) and is deterministic. A model therefore meets, at serving
time, pixels made by the same filter it was trained and evaluated on.
"""

from __future__ import annotations

import av
import numpy as np

from videocore.errors import VideoLimitError

__all__ = [
    "INTERPOLATION",
    "checked_output_size",
    "resize_short_side_center_crop",
    "short_side_size",
    "three_crops",
]

INTERPOLATION = "BILINEAR"


def short_side_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after scaling so the shorter side is ``short_side`` (aspect kept); None: as is."""
    if short_side is None:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def checked_output_size(
    width: int, height: int, short_side: int | None, max_aspect_ratio: float = 0.0, max_pixels: int = 0
) -> tuple[int, int]:
    """:func:`short_side_size`, refusing a shape whose aspect ratio or resized frame is over a limit
    (0: none) with :class:`~videocore.errors.VideoLimitError`: a 65535x48 canvas resized to a short
    side of 256 would be a 350,000-pixel-wide frame."""
    if max_aspect_ratio and min(width, height) > 0:
        ratio = max(width, height) / min(width, height)
        if ratio > max_aspect_ratio:
            raise VideoLimitError(
                f"aspect ratio of {width}x{height}", "max_aspect_ratio", round(ratio, 2), max_aspect_ratio
            )
    size = short_side_size(width, height, short_side)
    if max_pixels and size[0] * size[1] > max_pixels:
        raise VideoLimitError(
            f"frame size after the resize {size[0]}x{size[1]} in pixels",
            "max_frame_pixels",
            size[0] * size[1],
            max_pixels,
        )
    return size


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    resized: np.ndarray = vf.reformat(
        width=width, height=height, format="rgb24", interpolation=INTERPOLATION
    ).to_ndarray()
    return resized


def _resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    tw, th = short_side_size(w, h, short_side)
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
