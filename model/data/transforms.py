"""Training and test views of a clip, as the TSN/TSM/SDA recipe does them, on uint8 (T, H, W, 3).

Train: multi-scale crop (scales 1, .875, .75, .66 of the short side, aspect distortion of at most
one scale step, 13 fixed offsets; anywhere in the frame, or only inside its centred square) resized
to the input size, then a horizontal flip with p = 0.5 that swaps direction-dependent labels.
Test: the service's own resize-short-side + centre crop (or the paper's three crops), imported from
the service so train and serve crop identically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videocore.contract import eval_resize_short_side
from videocore.views import resize_short_side_center_crop, three_crops

SCALES = (1.0, 0.875, 0.75, 0.66)
# Where training crops may come from: the whole frame (the paper's), or only its centred square, the field
# of view that test-time centre cropping keeps (for data whose action is framed there, like the
# synthetic set: on a 16:9 frame, whole-frame crops miss half of that square in about half the views).
CROP_REGIONS = ("full", "centre")
# TSN's 13 fixed crop offsets, in quarters of the free space (x, y).
FIXED_OFFSETS = (
    (0, 0), (4, 0), (0, 4), (4, 4), (2, 2),
    (0, 2), (4, 2), (2, 4), (2, 0),
    (1, 1), (3, 1), (1, 3), (3, 3),
)  # fmt: skip


def multi_scale_crop_box(
    height: int, width: int, rng: np.random.Generator, scales: Sequence[float] = SCALES, max_distort: int = 1
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of one random multi-scale crop."""
    base = min(height, width)
    sizes = [int(base * scale) for scale in scales]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    off_x, off_y = FIXED_OFFSETS[int(rng.integers(len(FIXED_OFFSETS)))]
    left = (width - crop_w) * off_x // 4
    top = (height - crop_h) * off_y // 4
    return top, left, crop_h, crop_w


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, size, size, 3) uint8, bilinear with antialiasing."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def train_view(
    frames: np.ndarray,
    label: int,
    size: int,
    rng: np.random.Generator,
    flip_pairs: Mapping[int, int] | None,
    region: str = "full",
) -> tuple[np.ndarray, int]:
    """One augmented (T, size, size, 3) view and its label (changed when a flip mirrors the action).

    ``flip_pairs`` maps a class to its mirror class; classes missing from it keep their label. With
    ``flip_pairs=None`` flipping is off (for datasets whose labels a mirror would falsify).
    ``region``: "full" crops anywhere in the frame (the paper's); "centre" only inside its centred square.
    """
    if region not in CROP_REGIONS:
        raise ValueError(f"region must be one of {CROP_REGIONS}, not {region!r}")
    if region == "centre":
        height, width = frames.shape[1:3]
        side = min(height, width)
        top0, left0 = (height - side) // 2, (width - side) // 2
        frames = frames[:, top0 : top0 + side, left0 : left0 + side]
    top, left, crop_h, crop_w = multi_scale_crop_box(frames.shape[1], frames.shape[2], rng)
    view = resize_frames(frames[:, top : top + crop_h, left : left + crop_w], size)
    if flip_pairs is not None and rng.random() < 0.5:
        view = np.ascontiguousarray(view[:, :, ::-1])
        label = flip_pairs.get(label, label)
    return view, label


def eval_views(frames: np.ndarray, size: int, crops: int) -> np.ndarray:
    """(crops, T, size, size, 3): the centre crop of the short side resized to 256/224 x size
    (crops=1), or the paper's three crops (crops=3)."""
    short_side = eval_resize_short_side(size)
    if crops == 1:
        return resize_short_side_center_crop(frames, short_side, size)[None]
    if crops == 3:
        return three_crops(frames, short_side, size)
    raise ValueError(f"crops must be 1 or 3, not {crops}")
