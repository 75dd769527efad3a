"""model.data.independent, the second renderer used to judge generalisation, and model.evaluate on it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DEFAULT_MODEL_DIR, ROOT

from model.data.independent import render_independent_clip
from model.evaluate import main as evaluate_main


@pytest.mark.parametrize("label", range(12))
def test_every_class_renders_deterministically(label: int) -> None:
    first = render_independent_clip(label, np.random.default_rng([3, label]), short_side=64)
    again = render_independent_clip(label, np.random.default_rng([3, label]), short_side=64)
    other = render_independent_clip(label, np.random.default_rng([4, label]), short_side=64)
    assert first.label == label and first.frames.dtype == np.uint8 and first.frames.ndim == 4
    assert min(first.frames.shape[1:3]) == 64 and first.frames.shape[3] == 3
    assert 1.8 * first.fps - 1 <= len(first.frames) <= 3.6 * first.fps + 1  # 1.8 to 3.6 seconds
    assert np.array_equal(first.frames, again.frames)
    assert first.frames.shape != other.frames.shape or not np.array_equal(first.frames, other.frames)


@pytest.mark.parametrize("forward", [0, 2, 4, 6, 8])
def test_reversed_pairs_differ_in_frame_order_only(forward: int) -> None:
    clip = render_independent_clip(forward, np.random.default_rng([9, forward]), short_side=64)
    reverse = render_independent_clip(forward + 1, np.random.default_rng([9, forward]), short_side=64)
    assert np.array_equal(reverse.frames, clip.frames[::-1])
    assert not np.array_equal(clip.frames[0], clip.frames[-1])  # something moved


def test_it_shares_no_code_with_the_training_generator() -> None:
    source = (ROOT / "model" / "data" / "independent.py").read_text()
    imported = {
        node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name.startswith("model") for name in imported), imported


def test_labels_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="label must be in"):
        render_independent_clip(12, np.random.default_rng(0))


def test_evaluate_scores_a_graph_on_independent_clips(tmp_path: Path) -> None:
    graph = DEFAULT_MODEL_DIR / "model-8f.onnx"
    assert evaluate_main([str(graph), "--renderer", "independent", "--clips", "12", "--short-side", "96",
                          "--out", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / "evaluation-8f-independent.json").read_text())
    assert result["renderer"] == "independent" and result["clips"] == 12
    assert np.array(result["confusion"]).sum(axis=1).tolist() == [1] * 12  # one clip per class
    assert (tmp_path / "confusion-8f-independent.png").stat().st_size > 0
