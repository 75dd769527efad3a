"""The Triton repository writer (export/triton.py): config.pbtxt parses as Triton's ModelConfig
protobuf (tritonclient's copy) and describes the ONNX graph beside it exactly."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
from conftest import LABELS, SIZE
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from export.triton import graph_metadata, write_triton_repository
from videocore.triton import model_config

ORT_TYPES = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32"}


def test_triton_repository_matches_the_onnx_graphs(model_repo: Path, tmp_path: Path):
    source = model_repo / "tiny-sda" / "1"
    written = write_triton_repository(
        sorted(source.iterdir()), tmp_path / "triton", version=3, max_batch_size=4
    )
    assert [d.name for d in written] == ["tiny-sda-16f", "tiny-sda-8f"]
    for model_dir in written:
        frames = int(model_dir.name.split("-")[-1][:-1])
        config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == model_dir.name and config.backend == "onnxruntime"
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
        assert config.version_policy.latest.num_versions == 1
        assert config.dynamic_batching.max_queue_delay_microseconds == 5000
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
        assert (model_dir / "labels.txt").read_text().split() == list(LABELS)
        graph = model_dir / "3" / "model.onnx"
        assert graph.read_bytes() == (source / f"model-{frames}f.onnx").read_bytes()

        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        declared = {t.name: t for t in [*config.input, *config.output]}
        for tensor in [*session.get_inputs(), *session.get_outputs()]:
            spec = declared.pop(tensor.name)
            assert model_config_pb2.DataType.Name(spec.data_type) == ORT_TYPES[tensor.type]
            assert list(spec.dims) == tensor.shape[1:]  # Triton leaves out the batch dimension
            assert tensor.shape[0] not in (1,) and not isinstance(tensor.shape[0], int)  # batch is dynamic
        assert not declared, f"config declares tensors the graph lacks: {sorted(declared)}"
        assert list(config.input[0].dims) == [frames, SIZE, SIZE, 3]
        assert {o.name: o.label_filename for o in config.output}["probs"] == "labels.txt"

        # the service's /v2/models/{name}/config and the file come from one function
        meta = graph_metadata(graph)
        same = model_config(
            meta, model_dir.name, max_batch_size=4, max_queue_delay_us=5000, instance_kind="KIND_AUTO"
        )
        assert json_format.ParseDict(same, model_config_pb2.ModelConfig()) == config
