"""TSN segment sampling shared by the trainer and the service.

Both sides call :func:`sample_segment_indices` so that a model sees, at serving time, frames picked
by exactly the rule it was trained and evaluated with. A clip of ``n`` decoded frames is split into
``T`` equal segments and one frame is taken per segment:

* ``train``: a random frame inside each segment (``d = n // T``; ``i*d + randint(d)``). Clips shorter
  than ``T`` repeat frames evenly (``floor(i*n/T)``) instead of the reference code's all-zeros, so
  a 5-frame clip still shows its motion.
* ``test``: the segment centres ``int(tick/2 + tick*i)`` with ``tick = n / T``. For multi-clip testing
  (``num_clips = K > 1``) clip ``k`` uses the offset ``tick*k/K`` instead of ``tick/2``:
  ``int(tick*k/K + tick*i)``. With ``K = 2`` the two clips are the reference "twice sample" pair
  (segment starts ``int(tick*i)`` and segment centres ``int(tick/2 + tick*i)``), only in the other
  order, which does not matter since scores are averaged over clips.

Indices are 0-based frame numbers in decode order, always clamped to ``[0, n-1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

__all__ = ["index_chooser", "sample_segment_indices"]


def sample_segment_indices(
    num_frames: int,
    num_segments: int,
    mode: Literal["train", "test"],
    rng: np.random.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> list[int]:
    """Return ``num_segments`` 0-based frame indices of a clip with ``num_frames`` frames.

    ``rng`` is used in ``train`` mode only (a fresh unseeded generator when None). ``clip_index`` /
    ``num_clips`` select the temporal offset in ``test`` mode (ignored in ``train`` mode).
    Raises ValueError for an empty clip or invalid arguments.
    """
    n, t = int(num_frames), int(num_segments)
    if n <= 0:
        raise ValueError(f"cannot sample from a clip with {n} frames")
    if t <= 0:
        raise ValueError(f"num_segments must be positive, got {t}")
    if mode == "train":
        if rng is None:
            rng = np.random.default_rng()
        d = n // t
        if d > 0:
            idx = [i * d + int(rng.integers(d)) for i in range(t)]
        elif n > t:  # unreachable with one frame per segment (d == 0 implies n < t); kept from the recipe
            idx = sorted(int(x) for x in rng.choice(n, t, replace=False))
        else:  # n < t: repeat each frame evenly
            idx = [i * n // t for i in range(t)]
    elif mode == "test":
        k, kk = int(clip_index), int(num_clips)
        if kk <= 0 or not 0 <= k < kk:
            raise ValueError(f"need 0 <= clip_index < num_clips, got clip_index={k}, num_clips={kk}")
        tick = n / t
        offset = tick / 2 if kk == 1 else tick * k / kk
        idx = [int(offset + tick * i) for i in range(t)]
    else:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    return [min(max(i, 0), n - 1) for i in idx]


def index_chooser(num_segments: int, num_clips: int) -> Callable[[int], list[list[int]]]:
    """The ``choose_indices`` callback for ``probe_and_decode``: TSN test sampling, one list per clip."""

    def choose(num_frames: int) -> list[list[int]]:
        return [
            sample_segment_indices(num_frames, num_segments, "test", clip_index=k, num_clips=num_clips)
            for k in range(num_clips)
        ]

    return choose
