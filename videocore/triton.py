"""A graph's Triton model configuration, as the JSON form of Triton's ``ModelConfig`` protobuf.

One function both for the service (``GET /v2/models/{name}/config``) and for the Triton repository
writer (``export/triton.py`` renders it as ``config.pbtxt``), so the two cannot disagree. Triton
shapes leave out the batch dimension (``max_batch_size`` > 0 adds it).
"""

from __future__ import annotations

from typing import Any

from videocore.contract import DEPENDENCY_WEIGHTS, INPUT_NAME, LOGITS, PROBS, GraphMetadata

LABELS_FILE = "labels.txt"
VIDEO_INPUT = "video"


def output_dims(meta: GraphMetadata) -> dict[str, list[int]]:
    """Every output of a graph and its dims (without the batch dimension), in graph order."""
    dims = {LOGITS: [meta.num_classes], PROBS: [meta.num_classes]}
    if meta.has_dependency_weights:
        dims[DEPENDENCY_WEIGHTS] = [len(meta.blocks), len(meta.branches)]
    return dims


def model_config(
    meta: GraphMetadata,
    name: str,
    *,
    max_batch_size: int,
    max_queue_delay_us: int,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    video_input: bool = False,
) -> dict[str, Any]:
    """Triton's model configuration of ``meta``'s graph, served as ``name``. ``video_input``: also
    the service's optional ``video`` input (encoded files; not a Triton ONNX backend input)."""
    frames_input: dict[str, Any] = {
        "name": INPUT_NAME,
        "data_type": "TYPE_UINT8",
        "format": "FORMAT_NONE",
        "dims": [meta.frames, meta.input_size, meta.input_size, 3],
    }
    inputs = [frames_input]
    if video_input:
        frames_input["optional"] = True
        inputs.append(
            {
                "name": VIDEO_INPUT,
                "data_type": "TYPE_STRING",
                "dims": [1],
                "reshape": {"shape": []},
                "optional": True,
            }
        )
    outputs = []
    for output, dims in output_dims(meta).items():
        spec: dict[str, Any] = {"name": output, "data_type": "TYPE_FP32", "dims": dims}
        if output in (PROBS, LOGITS):
            spec["label_filename"] = LABELS_FILE
        outputs.append(spec)
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch_size,
        "input": inputs,
        "output": outputs,
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
        "instance_group": [{"name": name, "kind": instance_kind, "count": instance_count}],
        "parameters": {
            "frames": {"string_value": str(meta.frames)},
            "input_size": {"string_value": str(meta.input_size)},
            "resize_short_side": {"string_value": str(meta.resize_short_side)},
            "sampling": {"string_value": meta.sampling},
        },
    }
