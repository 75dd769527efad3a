"""Static int8 (QDQ) export: a real quantised graph that ORT runs, keeps the graph contract, is
checked by accuracy on synthetic clips, and writes nothing when the check fails."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import DEFAULT_MODEL_DIR

from export.__main__ import main as export_main
from export.quantize import Int8VerificationError, export_int8
from model import build_model
from model.checkpoint import CheckpointInfo, save_checkpoint
from model.data.synthetic import SYNTHETIC_LABELS
from videocore.contract import DEPENDENCY_WEIGHTS, INPUT_NAME, PROBS, GraphMetadata

DEFAULT_GRAPH = DEFAULT_MODEL_DIR / "model-8f.onnx"


def outputs(path: Path | bytes, frames: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT_NAME: frames}), strict=True))


def test_int8_graph_of_the_default_model_is_quantised_and_keeps_the_contract(tmp_path: Path) -> None:
    target = tmp_path / "model-8f-int8.onnx"
    report = export_int8(
        DEFAULT_GRAPH, target, calibration_clips=8, eval_clips=36, max_top1_drop=100.0, log=lambda _: None
    )
    proto = onnx.load(str(target))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    fp32_meta = GraphMetadata.from_props(
        {p.key: p.value for p in onnx.load(str(DEFAULT_GRAPH)).metadata_props}
    )
    int8_meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    # the fp32 contract, plus the precision and the check it passed against fp32
    assert replace(int8_meta, precision="fp32", precision_check=None) == fp32_meta
    assert int8_meta.precision == "int8" and int8_meta.precision_check is not None
    assert int8_meta.precision_check.passed and int8_meta.precision_check.method == report.check
    assert int8_meta.precision_check.top1_agreement == report.top1_agreement
    # uint8 input with a dynamic batch, the same outputs; probabilities still sum to one
    size = fp32_meta.input_size
    clip = np.random.default_rng(1).integers(0, 256, (2, 8, size, size, 3), dtype=np.uint8)
    got, ref = outputs(target, clip), outputs(DEFAULT_GRAPH, clip)
    assert got.keys() == ref.keys() and got[DEPENDENCY_WEIGHTS].shape == ref[DEPENDENCY_WEIGHTS].shape
    np.testing.assert_allclose(got[PROBS].sum(axis=1), 1.0, atol=1e-4)
    # the check is on accuracy (the default model's labels are the synthetic classes)
    assert report.check == "accuracy" and report.eval_clips == 36
    assert report.fp32_top1 is not None and report.int8_top1 is not None
    assert report.top1_agreement >= 75.0  # version 8: 99 % on 96 clips; catches a broken quantisation
    assert report.size_bytes == target.stat().st_size < DEFAULT_GRAPH.stat().st_size


def test_int8_accuracy_check_failing_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(Int8VerificationError, match="loses"):
        export_int8(
            DEFAULT_GRAPH, tmp_path / "x.onnx", calibration_clips=2, eval_clips=12, max_top1_drop=-100.0,
            log=lambda _: None,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_export_cli_int8_option_writes_the_graph_and_its_accuracy(tmp_path: Path) -> None:
    # TSN: the fastest family to export; the int8 plumbing does not depend on the architecture.
    model = build_model("tsn_r50", len(SYNTHETIC_LABELS), 8, width=0.125)
    info = CheckpointInfo(
        config=model.config, labels=list(SYNTHETIC_LABELS), input_size=64, training_data="t"
    )
    save_checkpoint(tmp_path / "last.pt", model, info)
    base = [str(tmp_path / "last.pt"), "--out", str(tmp_path / "models"), "--frames", "8"]
    base += ["--model-name", "m", "--int8", "--int8-clips", "4", "12"]
    assert export_main([*base, "--int8-max-drop", "100"]) == 0
    folder = tmp_path / "models" / "m" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["model-8f-int8.onnx", "model-8f.onnx", "model.json"]
    card = json.loads((folder / "model.json").read_text())
    int8 = [g for g in card["graphs"] if g["file"] == "model-8f-int8.onnx"]
    assert int8 and int8[0]["check"] == "accuracy" and int8[0]["eval_clips"] == 12
