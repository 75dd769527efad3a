"""Export a VideoClassifier to a self-describing ONNX graph and prove it matches PyTorch.

The graph takes what a decoder produces (uint8 RGB frames, resized and cropped) and does the rest
inside: float conversion, /255, mean/std, layout change. So no runtime needs our Python code.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from model.network import VideoClassifier
from model.preprocess import normalize_frames
from videocore.contract import DEPENDENCY_WEIGHTS, INPUT_NAME, LOGITS, PROBS, GraphMetadata, PrecisionCheck

OPSET = 18  # the dynamo exporter's native opset; its downgrade to 17 fails on the shift's Pad/Slice.
PARITY_TOLERANCE = 1e-4
# fp16 weights and activations: logits/probabilities/weights agree to ~1e-3; 2e-2 leaves margin
# for deep stacks while still catching a broken conversion (errors there are O(1)).
FP16_TOLERANCE = 2e-2


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce PyTorch; nothing was written."""


class FramesToPredictions(nn.Module):
    """uint8 (N, T, S, S, 3) RGB -> logits, probs and SDA weights: the graph's whole contract."""

    def __init__(self, model: VideoClassifier, mean: tuple[float, ...], std: tuple[float, ...], scale: float):
        super().__init__()
        self.model = model
        self.mean, self.std, self.scale = tuple(mean), tuple(std), float(scale)

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        logits, weights = self.model.forward_with_dependencies(
            normalize_frames(frames, self.mean, self.std, self.scale)
        )
        probs = torch.softmax(logits, dim=-1)
        if self.model.has_sda:
            return logits, probs, weights
        return logits, probs


@dataclass
class GraphReport:
    """What export measured for one graph."""

    path: Path
    frames: int
    parity: dict[str, float]
    size_bytes: int
    op_counts: dict[str, int]
    seconds: float
    precision: str = "fp32"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "frames": self.frames,
            "precision": self.precision,
            "size_bytes": self.size_bytes,
            "nodes": sum(self.op_counts.values()),
            "op_counts": self.op_counts,
            "max_abs_diff": self.parity,
            "export_seconds": round(self.seconds, 2),
        }


def output_names(model: VideoClassifier) -> list[str]:
    return [LOGITS, PROBS, DEPENDENCY_WEIGHTS] if model.has_sda else [LOGITS, PROBS]


def trace_to_onnx(wrapper: FramesToPredictions, frames: int, size: int) -> onnx.ModelProto:
    """torch.export-based ONNX export with a dynamic batch axis, then onnxslim.

    The exporter's own optimiser folds constants first; onnxslim (pure Python, ONNX in and out)
    then removes what is left of the shape arithmetic while keeping standard ONNX ops, so the graph
    stays portable to TensorRT/Triton (ORT's offline optimiser would bake in ORT-only fused ops).
    Skipping the first pass is faster but onnxslim then mis-fuses Conv3d+BatchNorm3d (a wrong
    bias shape): the parity check below is what catches such tool bugs.
    """
    import onnxslim

    example = torch.zeros(2, frames, size, size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = output_names(wrapper.model)
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_shapes={"frames": {0: batch}},
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    slimmed = onnxslim.slim(proto)
    return slimmed if slimmed is not None else proto


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and warnings; our CLI prints its own."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._export", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute for GPUs; inputs (uint8) and outputs stay as they are (fp32)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)


def attach_metadata(proto: onnx.ModelProto, metadata: GraphMetadata) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"sda-serve graph: {metadata.model_name} v{metadata.model_version}, {metadata.frames} frames"
    )


def mark_precision(proto: onnx.ModelProto, precision: str, check: PrecisionCheck) -> None:
    """Record in the graph's metadata its precision and the check it passed against fp32 (the service
    serves a reduced-precision graph only with a passed check recorded)."""
    kept = [(e.key, e.value) for e in proto.metadata_props if e.key not in ("precision", "precision_check")]
    del proto.metadata_props[:]
    for key, value in [*kept, ("precision", precision), ("precision_check", check.to_json())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def fp16_check(
    fp32: Runner, half: Runner, clips: list[np.ndarray], parity: dict[str, float]
) -> PrecisionCheck:
    """The fp16 graph's parity check as recorded in its metadata: top-1 agreement over every row of
    the verification clips, and the worst probability difference."""
    agree = rows = 0
    for clip in clips:
        reference, candidate = fp32(clip)[PROBS].argmax(axis=1), half(clip)[PROBS].argmax(axis=1)
        agree += int((reference == candidate).sum())
        rows += len(reference)
    return PrecisionCheck(
        method="parity", passed=True, clips=rows, tolerance=FP16_TOLERANCE,
        top1_agreement=100.0 * agree / rows, max_prob_diff=parity[PROBS],
    )  # fmt: skip


def op_counts(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in proto.graph.node).most_common())


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def onnx_runner(proto_bytes: bytes) -> Runner:
    """One ONNX Runtime (CPU) session for the graph, reused for every verification input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(proto_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own pybind error types
        raise ExportVerificationError(f"ONNX Runtime cannot load the exported graph: {error}") from error
    names = [output.name for output in session.get_outputs()]

    def run(frames: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return dict(zip(names, session.run(None, {INPUT_NAME: frames}), strict=True))
        except Exception as error:
            raise ExportVerificationError(f"ONNX Runtime cannot run the exported graph: {error}") from error

    return run


@torch.no_grad()
def run_torch(wrapper: FramesToPredictions, frames: np.ndarray) -> dict[str, np.ndarray]:
    outputs = wrapper(torch.from_numpy(frames))
    return {name: tensor.numpy() for name, tensor in zip(output_names(wrapper.model), outputs, strict=True)}


def max_abs_differences(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per output: max |candidate - reference| / max(1, max |reference|).

    For probabilities and dependency weights (within [0, 1]) this is the plain max absolute
    difference; logits larger than 1 in magnitude are compared relative to their scale, since fp32
    summation-order differences grow with it (a trained head's logits of ~30 differ by ~1e-4).
    """
    differences = {}
    for name, expected in reference.items():
        if name not in candidate:
            raise ExportVerificationError(f"exported graph has no output {name!r}")
        if candidate[name].shape != expected.shape:
            raise ExportVerificationError(
                f"output {name!r} has shape {candidate[name].shape}, PyTorch gives {expected.shape}"
            )
        scale = max(1.0, float(np.abs(expected).max()))
        differences[name] = float(np.abs(candidate[name].astype(np.float64) - expected).max()) / scale
    return differences


def _verify(
    reference: Runner,
    candidate: Runner,
    clips: list[np.ndarray],
    frames: int,
    against: str,
    tolerance: float,
    *,
    log: Callable[[str], None],
    skip: tuple[str, ...] = (),
) -> dict[str, float]:
    """Worst difference per output over ``clips``; raises (nothing written) above ``tolerance``."""
    parity: dict[str, float] = {}
    for clip in clips:
        expected = {name: value for name, value in reference(clip).items() if name not in skip}
        for name, diff in max_abs_differences(expected, candidate(clip)).items():
            parity[name] = max(parity.get(name, 0.0), diff)
    summary = ", ".join(f"{name} {diff:.2e}" for name, diff in parity.items())
    log(f"  [{frames}f] max difference from {against} (relative to max(1, |value|)): {summary}")
    worst = max(parity, key=lambda name: parity[name])
    if parity[worst] > tolerance:
        raise ExportVerificationError(
            f"{frames}-frame graph differs from {against}: max |diff| of {worst} is {parity[worst]:.3e} "
            f"> {tolerance:.0e}; nothing written"
        )
    return parity


def verification_inputs(frames: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Random uint8 clips at N=1 and N=3 (the batch axis must really be dynamic)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8) for batch in (1, 3)]


def export_graph(
    model: VideoClassifier,
    metadata: GraphMetadata,
    path: Path,
    *,
    fp16: bool = False,
    log: Callable[[str], None] = print,
) -> list[GraphReport]:
    """Export one frame count; verify (checker + ORT vs PyTorch at N=1 and N=3); then write.

    Raises ExportVerificationError, writing nothing, if any output differs by more than the
    tolerance. With ``fp16`` also writes ``<stem>-fp16.onnx``, checked against the fp32 graph.
    """
    start = time.perf_counter()
    model = model.eval()
    wrapper = FramesToPredictions(model, metadata.mean, metadata.std, metadata.scale).eval()
    size, frames = metadata.input_size, metadata.frames
    log(f"  [{frames}f] tracing and converting to ONNX (opset {OPSET})...")
    proto = trace_to_onnx(wrapper, frames, size)
    attach_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    proto_bytes = proto.SerializeToString()
    log(f"  [{frames}f] onnx.checker passed; comparing ONNX Runtime (CPU) with PyTorch at N=1 and N=3...")
    clips = verification_inputs(frames, size)
    fp32 = onnx_runner(proto_bytes)
    parity = _verify(
        functools.partial(run_torch, wrapper), fp32, clips, frames, "PyTorch", PARITY_TOLERANCE, log=log
    )
    reports = [
        GraphReport(path, frames, parity, len(proto_bytes), op_counts(proto), time.perf_counter() - start)
    ]
    outputs: list[tuple[Path, bytes]] = [(path, proto_bytes)]
    if fp16:
        half_start = time.perf_counter()
        half = to_fp16(proto)
        half_runner = onnx_runner(half.SerializeToString())
        # fp16 logits scale with the head; the probabilities and weights are what a user reads.
        half_parity = _verify(
            fp32,
            half_runner,
            clips,
            frames,
            "the fp32 graph",
            FP16_TOLERANCE,
            log=log,
            skip=(LOGITS,),
        )
        mark_precision(half, "fp16", fp16_check(fp32, half_runner, clips, half_parity))
        half_bytes = half.SerializeToString()
        half_path = path.with_name(path.stem + "-fp16.onnx")
        elapsed = time.perf_counter() - half_start
        reports.append(
            GraphReport(half_path, frames, half_parity, len(half_bytes), op_counts(half), elapsed, "fp16")
        )
        outputs.append((half_path, half_bytes))
    for target, data in outputs:
        target.write_bytes(data)
    return reports
