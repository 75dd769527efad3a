"""Export: every family to ONNX at 8 and 16 frames, parity with PyTorch, metadata, failure modes;
both torch.onnx exporters, auto's fallback, per-stage progress."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from authors_checkpoint import write_official_checkpoint

import export.graph
from export import export_model
from export.__main__ import main as export_main
from export.graph import ExportVerificationError, FramesToPredictions
from model import build_model, load_official_checkpoint
from model.checkpoint import CheckpointInfo, file_sha256, save_checkpoint
from videocore.contract import DEPENDENCY_WEIGHTS, INPUT_NAME, LOGITS, PROBS, GraphMetadata

LABELS = ["push left", "push right", "hold"]


def run_graph(path: Path, frames: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {INPUT_NAME: frames}), strict=True))


# sda_tsm at 224 so that layer4 runs S122 on 7x7 maps (the overlapping adaptive-pool case).
@pytest.mark.parametrize(
    ("name", "size"), [("tsn_r50", 64), ("tsm_r50", 64), ("sda_tsn_r50", 64), ("sda_tsm_r50", 224)]
)
def test_export_every_family_at_8_and_16_frames(tmp_path: Path, name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, len(LABELS), 8, width=0.125).eval()
    # non-trivial BN statistics, so that a wrongly folded BatchNorm would show
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    out = tmp_path / "repo" / "tiny" / "3"
    written = export_model(
        model, out, frames=(8, 16), size=size, labels=LABELS, model_name="tiny", version=3, log=lambda _: None
    )
    assert sorted(p.name for p in written) == ["model-16f.onnx", "model-8f.onnx", "model.json"]
    card = json.loads((out / "model.json").read_text())
    assert [g["frames"] for g in card["graphs"]] == [8, 16]
    wrapper = FramesToPredictions(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 255.0).eval()
    rng = np.random.default_rng(1)
    for frames in (8, 16):
        path = out / f"model-{frames}f.onnx"
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        assert proto.opset_import[0].version >= 17
        meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
        assert meta.labels == tuple(LABELS) and meta.frames == frames and meta.input_size == size
        assert meta.model_name == "tiny" and meta.model_version == "3"
        assert meta.architecture["name"] == name and meta.architecture["width"] == 0.125
        assert meta.blocks == model.block_names and meta.branches == model.branch_names
        # a fresh input (not the one export verified with), at a batch size export never saw
        clip = rng.integers(0, 256, (2, frames, size, size, 3), dtype=np.uint8)
        outputs = run_graph(path, clip)
        with torch.no_grad():
            expected = wrapper(torch.from_numpy(clip))
        np.testing.assert_allclose(outputs[LOGITS], expected[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(outputs[PROBS].sum(axis=1), 1.0, atol=1e-5)
        if model.has_sda:
            assert outputs[DEPENDENCY_WEIGHTS].shape == (2, 16, 4)
            np.testing.assert_allclose(outputs[DEPENDENCY_WEIGHTS], expected[2].numpy(), atol=1e-4)
        else:
            assert DEPENDENCY_WEIGHTS not in outputs
        report = next(g for g in card["graphs"] if g["frames"] == frames)
        assert max(report["max_abs_diff"].values()) <= 1e-4


def test_official_checkpoint_exports_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "sda_tsm_r50_something_v2.pth.tar"
    write_official_checkpoint(checkpoint)
    code = export_main(
        f"{checkpoint} --official --out {tmp_path / 'models'} --frames 8 --size 112 "
        "--model-name sda-tsm-ssv2 --version 1".split()
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "max difference from PyTorch" in printed
    # one line per stage, each with its time; auto chose TorchScript for this model
    for stage in ("trace (torchscript exporter", "simplify (onnxslim)", "verify (", "write: "):
        assert f"[8f] {stage}" in printed, printed
    graph = tmp_path / "models" / "sda-tsm-ssv2" / "1" / "model-8f.onnx"
    proto = onnx.load(str(graph))
    meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert meta.num_classes == 174 and meta.labels[0] == "class 0"
    assert meta.source_checkpoint_sha256 == file_sha256(checkpoint)
    model = load_official_checkpoint(checkpoint)
    clip = np.random.default_rng(5).integers(0, 256, (1, 8, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = FramesToPredictions(model, meta.mean, meta.std, meta.scale)(torch.from_numpy(clip))
    outputs = run_graph(graph, clip)
    np.testing.assert_allclose(outputs[LOGITS], expected[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs[DEPENDENCY_WEIGHTS], expected[2].numpy(), atol=1e-4)


def test_mismatched_checkpoint_fails_clearly_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "broken.pth.tar"
    state = write_official_checkpoint(checkpoint)
    del state["module.base_model.layer3.2.sda.agg.qVec"]
    torch.save({"state_dict": state}, checkpoint)
    out = tmp_path / "models"
    code = export_main([str(checkpoint), "--official", "--out", str(out), "--frames", "8"])
    error = capsys.readouterr().err
    assert code == 2
    assert "missing key 'backbone.layer3.2.sda.query'" in error
    assert not out.exists() or not any(out.rglob("*"))


def test_trainer_checkpoint_exports_into_a_model_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model("sda_tsm_r50", 3, 8, width=0.125)
    info = CheckpointInfo(config=model.config, labels=LABELS, input_size=64, training_data="unit test")
    save_checkpoint(tmp_path / "last.pt", model, info)
    assert (
        export_main(f"{tmp_path / 'last.pt'} --out {tmp_path / 'models'} --frames 8 --name tsm_r50".split())
        == 2
    )  # wrong arch named
    no_graph = f"{tmp_path / 'last.pt'} --out {tmp_path / 'models'} --frames 8 --default-frames 16"
    assert export_main(no_graph.split()) == 2  # a default frame count with no graph
    assert not (tmp_path / "models").exists()
    capsys.readouterr()
    code = export_main(
        f"{tmp_path / 'last.pt'} --out {tmp_path / 'models'} --frames 8 --fp16 "
        "--model-name mine --version 2 --default-frames 8 --quiet".split()
    )
    assert code == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing but errors
    folder = tmp_path / "models" / "mine" / "2"
    assert sorted(p.name for p in folder.iterdir()) == ["model-8f-fp16.onnx", "model-8f.onnx", "model.json"]
    proto = onnx.load(str(folder / "model-8f.onnx"))
    meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert meta.training_data == "unit test" and meta.labels == tuple(LABELS)
    assert meta.default_frames == 8
    clip = np.random.default_rng(0).integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    full, half = run_graph(folder / "model-8f.onnx", clip), run_graph(folder / "model-8f-fp16.onnx", clip)
    np.testing.assert_allclose(half[PROBS], full[PROBS], atol=export.graph.FP16_TOLERANCE)


def test_failed_verification_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tolerance no float graph can meet: export must refuse and leave no file behind.
    # A named exporter is the only one tried (auto would go on to dynamo: see the fallback test).
    monkeypatch.setattr(export.graph, "PARITY_TOLERANCE", -1.0)
    model = build_model("tsm_r50", 3, 8, width=0.125)
    with pytest.raises(ExportVerificationError, match="differs from PyTorch"):
        export_model(
            model, tmp_path / "out", frames=(8,), size=64, exporter="torchscript", log=lambda _: None
        )
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_exporter_is_refused_before_any_work(tmp_path: Path) -> None:
    model = build_model("tsn_r50", 3, 8, width=0.125)
    with pytest.raises(ValueError, match="unknown exporter"):
        export_model(model, tmp_path / "out", frames=(8,), size=64, exporter="onnxscript")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_give_a_verified_graph_with_the_same_contract(tmp_path: Path, exporter: str) -> None:
    # SDA-TSM: the shift, S122's pooling matrices, QSA and LST's Linear+BatchNorm1d all exported.
    torch.manual_seed(0)
    model = build_model("sda_tsm_r50", len(LABELS), 8, width=0.125).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    out = tmp_path / "out"
    lines: list[str] = []
    export_model(model, out, frames=(8,), size=64, labels=LABELS, exporter=exporter, log=lines.append)
    card = json.loads((out / "model.json").read_text())
    (graph,) = card["graphs"]
    assert graph["exporter"] == exporter
    assert set(graph["stage_seconds"]) == {"trace", "simplify", "verify", "write"}
    assert any(line.startswith(f"  [8f] trace ({exporter} exporter") for line in lines)
    proto = onnx.load(str(out / "model-8f.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    # every BatchNorm folded (into Conv by onnxslim, into Gemm after LST's MatMul by our pass)
    assert "BatchNormalization" not in ops and "Gemm" in ops
    meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    assert meta.frames == 8 and meta.labels == tuple(LABELS) and meta.architecture["num_frames"] == 8
    clip = np.random.default_rng(7).integers(0, 256, (2, 8, 64, 64, 3), dtype=np.uint8)
    outputs = run_graph(out / "model-8f.onnx", clip)
    with torch.no_grad():
        expected = FramesToPredictions(model, meta.mean, meta.std, meta.scale)(torch.from_numpy(clip))
    for name, value in zip((LOGITS, PROBS, DEPENDENCY_WEIGHTS), expected, strict=True):
        np.testing.assert_allclose(outputs[name], value.numpy(), atol=1e-4)


def test_auto_falls_back_to_dynamo_and_keeps_it_for_the_next_frame_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TorchScript exporter broken (as it may be in a future torch): auto must still export, by
    # dynamo, and not retry TorchScript for the second frame count.
    real = export.graph.trace_to_onnx
    tried: list[tuple[str, int]] = []

    def torchscript_broken(wrapper: FramesToPredictions, frames: int, size: int, exporter: str):
        tried.append((exporter, frames))
        if exporter == "torchscript":
            raise RuntimeError("TorchScript exporter removed")
        return real(wrapper, frames, size, exporter)

    monkeypatch.setattr(export.graph, "trace_to_onnx", torchscript_broken)
    model = build_model("tsn_r50", len(LABELS), 4, width=0.125)
    lines: list[str] = []
    out = tmp_path / "out"
    export_model(model, out, frames=(4, 8), size=32, labels=LABELS, log=lines.append)
    assert tried == [("torchscript", 4), ("dynamo", 4), ("dynamo", 8)]
    assert any("torchscript exporter failed: TorchScript exporter removed" in line for line in lines)
    card = json.loads((out / "model.json").read_text())
    assert [graph["exporter"] for graph in card["graphs"]] == ["dynamo", "dynamo"]
    clip = np.random.default_rng(3).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = FramesToPredictions(model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 255.0)(
            torch.from_numpy(clip)
        )
    np.testing.assert_allclose(run_graph(out / "model-8f.onnx", clip)[LOGITS], expected[0].numpy(), atol=1e-4)
