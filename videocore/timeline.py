"""Timelines of untrimmed videos: which windows to classify, and how per-window answers become segments.

Shared by the service (``POST /timeline``) and the offline scorer (``python -m model.timeline_eval``), so
both plan windows and smooth them by one rule.

Windows: a video of duration ``D`` seconds is covered by windows of ``window_s`` seconds every
``stride_s`` seconds, starting at 0; the last window is moved back to end at ``D`` (so the end is
covered and no window runs past it); a video shorter than one window gets one window, the whole
video. Each window is sampled as a trimmed clip of its frames would be (TSN segment centres,
:func:`videocore.sampling.sample_segment_indices`), frame ``i`` standing at ``i / fps`` seconds.

Segments (:func:`segments`): each window's top-1 class is replaced by the most frequent top-1 among it
and its ``smooth // 2`` neighbours on each side (a mode filter, the categorical counterpart of a
median filter; ties keep the window's own class), then runs of consecutive windows with the same
class become one segment. A window stands for its centre: a segment starts halfway between the
centre of the previous run's last window and the centre of its own first window (0 for the first
segment) and ends likewise (``D`` for the last). Its ``confidence`` is the mean, over its windows,
of the probability of its class; segments under ``min_score`` are dropped (their span is left
unlabelled).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from videocore.sampling import sample_segment_indices

__all__ = ["Segment", "Window", "plan_windows", "segments", "smooth_labels"]

DEFAULT_SMOOTH = 3


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    indices: list[int]  # the frames sampled, 0-based presentation indices

    @property
    def centre_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(frozen=True)
class Segment:
    label: int
    start_s: float
    end_s: float
    confidence: float
    first_window: int
    last_window: int


def window_starts(duration_s: float, window_s: float, stride_s: float) -> list[float]:
    """Start times of the windows covering ``[0, duration_s]`` (see the module docstring)."""
    if window_s <= 0 or stride_s <= 0:
        raise ValueError("window_s and stride_s must be positive")
    if duration_s <= window_s:
        return [0.0]
    count = math.ceil((duration_s - window_s) / stride_s - 1e-9) + 1
    return [min(k * stride_s, duration_s - window_s) for k in range(count)]


def plan_windows(
    frames: int, fps: float, duration_s: float, frames_per_window: int, window_s: float, stride_s: float
) -> list[Window]:
    """The windows of a ``frames``-frame video at ``fps`` (frame ``i`` at ``i / fps`` s)."""
    if frames <= 0:
        raise ValueError("the video has no frames")
    if fps <= 0:
        fps = frames / duration_s if duration_s > 0 else 1.0
    duration_s = duration_s if duration_s > 0 else frames / fps
    windows = []
    for start in window_starts(duration_s, window_s, stride_s):
        end = min(start + window_s, duration_s)
        first = min(frames - 1, max(0, math.ceil(start * fps - 1e-6)))
        last = min(frames, max(first + 1, math.ceil(end * fps - 1e-6)))  # exclusive
        picks = sample_segment_indices(last - first, frames_per_window, "test")
        windows.append(Window(round(start, 6), round(end, 6), [first + i for i in picks]))
    return windows


def count_windows(duration_s: float, window_s: float, stride_s: float) -> int:
    return len(window_starts(duration_s, window_s, stride_s))


def smooth_labels(labels: Sequence[int], smooth: int = DEFAULT_SMOOTH) -> list[int]:
    """Mode filter of width ``smooth`` (odd; 1 = none) over per-window top-1 classes."""
    half = max(0, int(smooth) // 2)
    out = []
    for k, own in enumerate(labels):
        counts = Counter(labels[max(0, k - half) : k + half + 1])
        best = max(counts.values())
        out.append(own if counts[own] == best else min(c for c, n in counts.items() if n == best))
    return out


def segments(
    probs: np.ndarray,
    windows: Sequence[Window],
    duration_s: float,
    *,
    smooth: int = DEFAULT_SMOOTH,
    min_score: float = 0.0,
) -> list[Segment]:
    """Per-window class probabilities ``(W, C)`` -> labelled segments (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(windows) == 0:
        return []
    labels = smooth_labels([int(i) for i in probs.argmax(axis=1)], smooth)
    runs: list[tuple[int, int]] = []  # (first, last) window of each run
    for k, label in enumerate(labels):
        if runs and labels[runs[-1][0]] == label:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    out = []
    for r, (first, last) in enumerate(runs):
        label = labels[first]
        start = 0.0 if r == 0 else (windows[runs[r - 1][1]].centre_s + windows[first].centre_s) / 2
        end = duration_s if r == len(runs) - 1 else (windows[last].centre_s + windows[last + 1].centre_s) / 2
        confidence = float(probs[first : last + 1, label].mean())
        if confidence >= min_score:
            out.append(Segment(label, round(start, 6), round(end, 6), confidence, first, last))
    return out
