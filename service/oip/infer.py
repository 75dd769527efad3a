"""OIP inference, shared by the REST and gRPC front ends.

Inputs (exactly one):

- ``frames``: UINT8 [N, T, S, S, 3], already resized and cropped as the graph wants; each row is
  one clip and gets its own output row. For the plain model name, T picks the graph (8 or 16).
- ``video``: BYTES [N] (or [N, 1]): N encoded video files, decoded and sampled exactly as /classify
  does; parameters ``frames``, ``clips``, ``crops`` (request-level, or on the input) as /classify's
  query parameters. Each video gets one output row: the mean over its clips x crops rows.
  Sent as JSON, each element is the file in base64 (JSON strings cannot carry raw bytes).

Outputs: ``probs``, ``logits``, ``dependency_weights`` (SDA models), FP32. Triton's classification
extension: an output asked for with parameters ``{"classification": k}`` comes back as BYTES [N, k]
``"<score>:<index>:<label>"``, best first.

A request takes one of the service's request slots (``max_queue``), goes through the same decode
pool and dynamic batcher as /classify and is counted in the same metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import time
from typing import Any

import numpy as np

from service.engine import Graph
from service.errors import InvalidOptionError
from service.oip.errors import OIPRequestError
from service.oip.models import OIPModel
from service.oip.tensors import BYTES, InferRequest, InferResponse, Tensor
from service.pipeline import ClassifyOptions, ClassifyPipeline
from videocore.contract import INPUT_NAME
from videocore.triton import VIDEO_INPUT

VIDEO_PARAMETERS = ("frames", "clips", "crops")


def _int_parameter(parameters: dict[str, Any], name: str) -> int | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OIPRequestError(f"parameter {name!r} must be a positive integer, not {value!r}")
    return value


def _single_input(request: InferRequest) -> Tensor:
    names = [t.name for t in request.inputs]
    unknown = [n for n in names if n not in (INPUT_NAME, VIDEO_INPUT)]
    if unknown:
        raise OIPRequestError(
            f"unknown input(s) {unknown}: the inputs are {INPUT_NAME!r} and {VIDEO_INPUT!r}"
        )
    if len(names) != 1:
        raise OIPRequestError(f"send exactly one input, {INPUT_NAME!r} or {VIDEO_INPUT!r} (got {names})")
    return request.inputs[0]


def _requested(request: InferRequest, graph: Graph) -> list[tuple[str, int | None]]:
    """(output name, classification k or None) for every output to return."""
    available = graph.output_names
    if request.outputs is None:
        return [(name, None) for name in available]
    chosen = []
    for out in request.outputs:
        if out.name not in available:
            raise OIPRequestError(f"unknown output {out.name!r}; model outputs: {available}")
        k = _int_parameter(out.parameters, "classification")
        chosen.append((out.name, k))
    return chosen


def _classification(values: np.ndarray, k: int, labels: tuple[str, ...]) -> np.ndarray:
    if values.ndim != 2:
        raise OIPRequestError("classification is available for probs and logits only")
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    result = np.empty(order.shape, dtype=object)
    for row, indices in enumerate(order):
        for col, index in enumerate(indices):
            result[row, col] = f"{float(values[row, index]):f}:{int(index)}:{labels[int(index)]}".encode()
    return result


def _frames_graph(engine_model: OIPModel, tensor: Tensor, pipeline: ClassifyPipeline) -> Graph:
    graph = engine_model.graph
    shape = tensor.shape
    if tensor.datatype != "UINT8" or len(shape) != 5 or shape[4] != 3:
        raise OIPRequestError(
            f"input {INPUT_NAME!r} must be UINT8 [N, T, S, S, 3], got {tensor.datatype} {shape}"
        )
    if not engine_model.alias and shape[1] != graph.frames:
        # the plain name takes any exported frame count; the tensor's T picks the graph
        frames_graph = pipeline.engine.served(graph.name, graph.version, shape[1])
        graph = frames_graph or graph
    expected = [graph.frames, graph.meta.input_size, graph.meta.input_size, 3]
    if list(shape[1:]) != expected:
        raise OIPRequestError(
            f"input {INPUT_NAME!r} of model {engine_model.name!r} must have shape "
            f"[N, {', '.join(map(str, expected))}], got {shape}"
        )
    return graph


def _check_rows(rows: int, pipeline: ClassifyPipeline, what: str) -> None:
    limit = pipeline.settings.max_batch_size
    if not 1 <= rows <= limit:
        raise OIPRequestError(f"{what}: batch size must be between 1 and max_batch_size {limit}, not {rows}")


def _video_options(model: OIPModel, request: InferRequest, tensor: Tensor) -> ClassifyOptions:
    parameters = {**request.parameters, **tensor.parameters}
    frames, clips, crops = (_int_parameter(parameters, p) for p in VIDEO_PARAMETERS)
    if model.alias and frames is not None and frames != model.graph.frames:
        raise InvalidOptionError(f"model {model.name!r} takes {model.graph.frames} frames, not {frames}")
    return ClassifyOptions(
        frames=frames if frames is not None else model.graph.frames,
        clips=clips or 1,
        crops=crops or 1,
        model=model.graph.name,
        version=model.graph.version,
    )


def _video_files(tensor: Tensor) -> list[bytes]:
    if tensor.datatype != BYTES or not 1 <= len(tensor.shape) <= 2 or tensor.shape[1:] not in ([], [1]):
        raise OIPRequestError(
            f"input {VIDEO_INPUT!r} must be BYTES [N] or [N, 1], got {tensor.datatype} {tensor.shape}"
        )
    files = [bytes(v) for v in tensor.data.reshape(-1)]
    if tensor.from_json:
        try:
            files = [base64.b64decode(f, validate=True) for f in files]
        except (binascii.Error, ValueError) as error:
            raise OIPRequestError(
                f"input {VIDEO_INPUT!r} sent as JSON must hold base64 strings (or use binary data): {error}"
            ) from error
    return files


async def _run_video(
    pipeline: ClassifyPipeline,
    graph: Graph,
    options: ClassifyOptions,
    files: list[bytes],
    timings: dict[str, float],
) -> dict[str, np.ndarray]:
    uploads = [io.BytesIO(f) for f in files]
    prepared = await asyncio.gather(*(pipeline.decode(u, graph, options) for u in uploads))
    for stage in ("decode_wait_ms", "decode_ms", "preprocess_ms"):
        timings[stage[:-3]] = max(getattr(p, stage) for p in prepared)
    input_ms = timings["decode"] + timings["preprocess"]
    result = await pipeline.run(graph, np.concatenate([p.batch for p in prepared]), input_ms)
    timings["queue"], timings["inference"] = result.queue_ms, result.inference_ms
    per_video = [p.batch.shape[0] for p in prepared]
    bounds = np.cumsum([0, *per_video])
    return {
        name: np.stack([value[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)]).astype(value.dtype)
        for name, value in result.outputs.items()
    }


async def infer(pipeline: ClassifyPipeline, model: OIPModel, request: InferRequest) -> InferResponse:
    """Run one OIP inference request (see the module docstring)."""
    started = time.perf_counter()
    pipeline.check_ready()
    tensor = _single_input(request)
    timings: dict[str, float] = {}
    if tensor.name == INPUT_NAME:
        graph = _frames_graph(model, tensor, pipeline)
        _check_rows(tensor.shape[0], pipeline, INPUT_NAME)
        requested = _requested(request, graph)
        async with pipeline.admitted():
            result = await pipeline.run(graph, np.ascontiguousarray(tensor.data, dtype=np.uint8))
        timings["queue"], timings["inference"] = result.queue_ms, result.inference_ms
        outputs = result.outputs
    else:
        files = _video_files(tensor)
        _check_rows(len(files), pipeline, VIDEO_INPUT)
        options = _video_options(model, request, tensor)
        pipeline.check_views(options)
        graph = pipeline.engine.resolve(options.model, options.version, options.frames)
        requested = _requested(request, graph)
        async with pipeline.admitted():
            outputs = await _run_video(pipeline, graph, options, files, timings)
    timings["total"] = (time.perf_counter() - started) * 1000.0
    pipeline.observe(timings)
    tensors = []
    for name, k in requested:
        values = outputs[name]
        if k is not None:
            values = _classification(values, k, graph.meta.labels)
            tensors.append(Tensor(name, BYTES, list(values.shape), values))
        else:
            values = np.ascontiguousarray(values, dtype=np.float32)
            tensors.append(Tensor(name, "FP32", list(values.shape), values))
    return InferResponse(model.name, graph.version, tensors, request.id)
