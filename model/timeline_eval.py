"""Score timelines on untrimmed synthetic sequences with known cuts (``python -m model.timeline_eval``).

Each sequence is ``render_sequence`` of 3-6 random classes (each action one rendered clip, 1.5-4 s, or
longer with ``--min-action-s``), encoded to H.264 MP4, decoded once with
:func:`videocore.decode.decode_windows` into the windows :mod:`videocore.timeline` plans (the service's
rule), run through the ONNX graph with ONNX Runtime in batches, and smoothed into segments by
:func:`videocore.timeline.segments` (the service's rule). Scores, over all sequences:

* ``window_top1``: top-1 (before smoothing) of the windows lying entirely inside one action;
* ``median_boundary_error_s``: for each true cut, the distance to the nearest predicted segment
  boundary (a sequence predicted as one segment has none: its cuts count as the distance to the
  sequence's nearer end), median over cuts;
* ``segment_f1``: predicted segments matched one-to-one to true actions of the same class with
  temporal IoU >= 0.5 (greedy, highest IoU first); F1 of precision and recall.

The service itself is exercised on such sequences by tests/test_timeline.py; this module imports no
service code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model.data.synthetic import NUM_CLASSES, SyntheticSequence, render_sequence
from model.evaluate import encode_mp4
from videocore.contract import INPUT_NAME, PROBS, GraphMetadata
from videocore.decode import VideoLimits, decode_windows
from videocore.timeline import DEFAULT_SMOOTH, Segment, Window, plan_windows, segments
from videocore.views import resize_short_side_center_crop

BATCH = 8


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def segment_matches(
    truth: Sequence[tuple[int, float, float]], found: Sequence[Segment], threshold: float = 0.5
) -> int:
    """One-to-one matches (same class, IoU >= ``threshold``), greedy by IoU."""
    pairs = sorted(
        (
            (iou((t[1], t[2]), (s.start_s, s.end_s)), i, j)
            for i, t in enumerate(truth)
            for j, s in enumerate(found)
            if t[0] == s.label
        ),
        reverse=True,
    )
    used_t, used_s = set(), set()
    for score, i, j in pairs:
        if score >= threshold and i not in used_t and j not in used_s:
            used_t.add(i)
            used_s.add(j)
    return len(used_t)


def boundary_errors(cuts: Sequence[float], found: Sequence[Segment], duration_s: float) -> list[float]:
    predicted = [s.start_s for s in found[1:]]
    return [min((abs(c - p) for p in predicted), default=min(c, duration_s - c)) for c in cuts]


def windows_inside(
    spans: Sequence[tuple[int, float, float]], windows: Sequence[Window]
) -> list[tuple[int, int]]:
    """(window number, true class) of the windows entirely inside one action."""
    out = []
    for k, w in enumerate(windows):
        for label, start, end in spans:
            if w.start_s >= start - 1e-6 and w.end_s <= end + 1e-6:
                out.append((k, label))
                break
    return out


def timeline_probs(
    session: ort.InferenceSession, meta: GraphMetadata, video: bytes, window_s: float, stride_s: float
) -> tuple[np.ndarray, list[Window], float]:
    """Per-window probabilities of ``video``: one decode pass, rows batched through the graph."""
    plan: list[Window] = []
    rows: list[np.ndarray] = []
    probs: list[np.ndarray] = []

    def choose(info):  # type: ignore[no-untyped-def]
        plan.extend(plan_windows(info.frames, info.fps, info.duration_s, meta.frames, window_s, stride_s))
        return [w.indices for w in plan]

    def flush() -> None:
        if rows:
            probs.append(session.run([PROBS], {INPUT_NAME: np.stack(rows)})[0])
            rows.clear()

    def on_window(_k: int, frames: np.ndarray, _stamps: list[float]) -> None:
        rows.append(resize_short_side_center_crop(frames, meta.resize_short_side, meta.input_size))
        if len(rows) == BATCH:
            flush()

    decoded = decode_windows(
        video, choose, on_window, VideoLimits(timeout_s=24 * 3600.0), resize_short_side=meta.resize_short_side
    )
    flush()
    return np.concatenate(probs), plan, decoded.info.duration_s


def score(
    graph: Path, sequences: int, seed: int, *, window_s: float, stride_s: float, smooth: int,
    min_actions: int, max_actions: int, min_action_s: float, min_clip_s: float, short_side: int,
    min_score: float = 0.0,
) -> dict[str, object]:  # fmt: skip
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    meta = GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    rng = np.random.default_rng(seed)
    inside_hits = inside_total = matched = n_true = n_found = 0
    errors: list[float] = []
    durations: list[float] = []
    started = time.perf_counter()
    for _ in range(sequences):
        count = int(rng.integers(min_actions, max_actions + 1))
        labels = [int(x) for x in rng.choice(NUM_CLASSES, count, replace=False)]
        seq: SyntheticSequence = render_sequence(
            labels, rng, short_side=short_side, min_action_s=min_action_s, min_clip_s=min_clip_s
        )
        probs, windows, duration = timeline_probs(
            session, meta, encode_mp4(seq.frames, seq.fps), window_s, stride_s
        )
        found = segments(probs, windows, duration, smooth=smooth, min_score=min_score)
        spans = seq.spans()
        inside = windows_inside(spans, windows)
        inside_hits += sum(int(probs[k].argmax()) == label for k, label in inside)
        inside_total += len(inside)
        errors.extend(boundary_errors(seq.cuts_s, found, duration))
        matched += segment_matches(spans, found)
        n_true += len(spans)
        n_found += len(found)
        durations.append(seq.duration_s)
    precision = matched / n_found if n_found else 0.0
    recall = matched / n_true if n_true else 0.0
    return {
        "graph": str(graph),
        "sequences": sequences,
        "actions": n_true,
        "duration_s": {"min": min(durations), "median": statistics.median(durations), "max": max(durations)},
        "window_s": window_s,
        "stride_s": stride_s,
        "smooth": smooth,
        "min_action_s": min_action_s,
        "min_clip_s": min_clip_s,
        "min_score": min_score,
        "windows_inside_actions": inside_total,
        "window_top1": inside_hits / inside_total if inside_total else None,
        "median_boundary_error_s": statistics.median(errors) if errors else None,
        "segments_found": n_found,
        "segment_precision": precision,
        "segment_recall": recall,
        "segment_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graph", type=Path, default=Path("models/sda-tsm-synthetic/8/model-16f.onnx"))
    parser.add_argument("--sequences", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window-s", type=float, default=1.5)
    parser.add_argument("--stride-s", type=float, default=0.5)
    parser.add_argument("--smooth", type=int, default=DEFAULT_SMOOTH)
    parser.add_argument("--min-actions", type=int, default=3)
    parser.add_argument("--max-actions", type=int, default=6)
    parser.add_argument("--min-action-s", type=float, default=0.0)
    parser.add_argument("--min-score", type=float, default=0.0)
    parser.add_argument("--min-clip-s", type=float, default=0.0)
    parser.add_argument("--short-side", type=int, default=96)
    a = parser.parse_args(argv)
    result = score(
        a.graph, a.sequences, a.seed, window_s=a.window_s, stride_s=a.stride_s, smooth=a.smooth,
        min_actions=a.min_actions, max_actions=a.max_actions, min_action_s=a.min_action_s,
        min_clip_s=a.min_clip_s, short_side=a.short_side, min_score=a.min_score,
    )  # fmt: skip
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
