"""Numpy in and out of a graph: decoded frames -> graph input, graph outputs -> the response's numbers.

The graph takes uint8 RGB (N, T, S, S, 3) already resized (short side ``resize_short_side``) and
cropped to S = ``input_size``; normalisation happens inside the graph. One request becomes
``clips x crops`` rows (clip-major); its scores are the mean over those rows, as in the paper's
multi-clip, multi-crop testing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from videocore.contract import DEPENDENCY_WEIGHTS, GraphMetadata
from videocore.views import resize_short_side_center_crop, three_crops


def model_input(clips: Sequence[np.ndarray], meta: GraphMetadata, crops: int) -> np.ndarray:
    """Decoded clips (each (T, H, W, 3) uint8) -> (len(clips) * crops, T, S, S, 3) uint8."""
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, not {crops}")
    rows: list[np.ndarray] = []
    for clip in clips:
        if crops == 1:
            rows.append(resize_short_side_center_crop(clip, meta.resize_short_side, meta.input_size)[None])
        else:
            rows.append(three_crops(clip, meta.resize_short_side, meta.input_size))
    batch = np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.uint8)
    expected = (meta.frames, meta.input_size, meta.input_size, 3)
    if batch.shape[1:] != expected:
        raise ValueError(f"preprocessed clips have shape {batch.shape[1:]}, the graph wants {expected}")
    return batch


def top_predictions(probs: np.ndarray, labels: Sequence[str], top_k: int) -> list[dict[str, object]]:
    """Mean of the rows' softmax probabilities, top ``top_k`` descending (ties: lower index first)."""
    mean = np.asarray(probs, dtype=np.float64).mean(axis=0)
    order = np.argsort(-mean, kind="stable")[:top_k]
    return [{"index": int(i), "label": labels[int(i)], "score": float(mean[i])} for i in order]


def dependency_summary(outputs: dict[str, np.ndarray], meta: GraphMetadata) -> dict[str, list[Any]]:
    """Per block and per ResNet stage mean SDA branch weights (mean over the request's rows)."""
    if not meta.has_dependency_weights or DEPENDENCY_WEIGHTS not in outputs:
        return {"branches": [], "blocks": [], "stages": []}
    weights = np.asarray(outputs[DEPENDENCY_WEIGHTS], dtype=np.float64).mean(axis=0)  # (B, M)
    branches = list(meta.branches)
    blocks = [
        {"block": block, "weights": {b: float(w) for b, w in zip(branches, row, strict=True)}}
        for block, row in zip(meta.blocks, weights, strict=True)
    ]
    stage_rows: dict[str, list[np.ndarray]] = {}
    for block, row in zip(meta.blocks, weights, strict=True):
        stage_rows.setdefault(block.split(".")[0], []).append(row)
    stages = [
        {
            "stage": stage,
            "weights": {b: float(w) for b, w in zip(branches, np.mean(rows, axis=0), strict=True)},
        }
        for stage, rows in stage_rows.items()
    ]
    return {"branches": branches, "blocks": blocks, "stages": stages}


__all__ = ["dependency_summary", "model_input", "top_predictions"]
