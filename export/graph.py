"""Export a VideoClassifier to a self-describing ONNX graph and prove it matches PyTorch.

The graph takes what a decoder produces (uint8 RGB frames, resized and cropped) and does the rest
inside: float conversion, /255, mean/std, layout change. So no runtime needs our Python code.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from model.network import VideoClassifier
from model.preprocess import normalize_frames
from videocore.contract import DEPENDENCY_WEIGHTS, INPUT_NAME, LOGITS, PROBS, GraphMetadata, PrecisionCheck

# One opset for both exporters, so that their graphs compare op for op; it is the dynamo exporter's
# native one (its downgrade to 17 fails on the shift's Pad/Slice).
OPSET = 18
# Which torch.onnx exporter turns the model into a graph; "auto" tries them in this order and takes
# the first whose graph passes the checks (checker, ORT load, parity at N=1 and N=3).
# TorchScript first because it is measured faster (docs/export.md: SDA-TSM R50 224^2 takes about
# as long for both frame counts as dynamo takes for one) with the same ops on activations, parity
# ~1e-6 and the same ORT speed. Dynamo stays as the fallback because the TorchScript exporter is
# deprecated upstream and may one day fail on a model or a torch version where dynamo works.
EXPORTERS = ("torchscript", "dynamo")
AUTO = "auto"
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
    exporter: str = ""
    stages: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "frames": self.frames,
            "precision": self.precision,
            "exporter": self.exporter,
            "size_bytes": self.size_bytes,
            "nodes": sum(self.op_counts.values()),
            "op_counts": self.op_counts,
            "max_abs_diff": self.parity,
            "export_seconds": round(self.seconds, 2),
            "stage_seconds": {name: round(seconds, 2) for name, seconds in self.stages.items()},
        }


def output_names(model: VideoClassifier) -> list[str]:
    return [LOGITS, PROBS, DEPENDENCY_WEIGHTS] if model.has_sda else [LOGITS, PROBS]


def trace_to_onnx(wrapper: FramesToPredictions, frames: int, size: int, exporter: str) -> onnx.ModelProto:
    """Trace ``wrapper`` at ``frames`` frames with a dynamic batch axis into an ONNX graph.

    ``exporter`` is one of ``EXPORTERS``. The frame count is baked into the graph (the shift's and
    SDA's reshapes and the fixed pooling matrices are sized by T), so each T needs its own trace;
    the batch axis stays dynamic. Each exporter runs its own constant folding first: onnxslim on an
    unfolded dynamo graph mis-fuses Conv3d+BatchNorm3d (a wrong bias shape).
    """
    example = torch.zeros(2, frames, size, size, 3, dtype=torch.uint8)
    names = output_names(wrapper.model)
    # no_grad: the TorchScript tracer runs the forward with autograd on otherwise, keeping every
    # activation alive (R50 224^2: +2 GB peak memory and 20 % more time for nothing).
    with _quiet_exporter(), torch.no_grad():
        if exporter == "dynamo":
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes={"frames": {0: torch.export.Dim("batch", min=1, max=4096)}},
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
            return program.model_proto
        if exporter == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *names]},
                opset_version=OPSET,
                do_constant_folding=True,
            )
            return onnx.load_model_from_string(buffer.getvalue())
    raise ValueError(f"unknown exporter {exporter!r}; choose from {[AUTO, *EXPORTERS]}")


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim, then ``fold_batchnorm_into_matmul``: standard ONNX ops only, shape arithmetic folded.

    Pure Python, ONNX in and out, so the graph stays portable to TensorRT/Triton (ORT's offline
    optimiser would bake in ORT-only fused ops). The parity check after it is what catches a
    simplifier bug.
    """
    import onnxslim

    slimmed = onnxslim.slim(proto)
    slimmed = slimmed if slimmed is not None else proto
    fold_batchnorm_into_matmul(slimmed)
    return slimmed


def fold_batchnorm_into_matmul(proto: onnx.ModelProto) -> int:
    """Fold MatMul(x, W) -> BatchNormalization on a 2-D activation into one Gemm; returns the count.

    TorchScript exports SDA's LST excitation (Linear without bias, then BatchNorm1d) as MatMul +
    BatchNormalization, which onnxslim leaves alone; dynamo's optimiser folds it into a Gemm. With
    this pass both exporters' graphs have the same ops there. Exact algebra in float64:
    BN(xW) = x (W s) + (beta - mean s), s = gamma / sqrt(var + eps), on the channel (last) axis.
    """
    from onnx import numpy_helper

    graph = proto.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    uses = collections.Counter(name for node in graph.node for name in node.input)
    uses.update(output.name for output in graph.output)
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in onnx.shape_inference.infer_shapes(proto).graph.value_info
        if info.type.tensor_type.HasField("shape")
    }
    folded = 0
    for bn in [node for node in graph.node if node.op_type == "BatchNormalization"]:
        matmul = producers.get(bn.input[0])
        if matmul is None or matmul.op_type != "MatMul" or uses[bn.input[0]] != 1:
            continue
        if ranks.get(bn.input[0]) != 2 or len(bn.output) != 1:
            continue
        names = [matmul.input[1], *bn.input[1:5]]
        if not all(name in weights for name in names):
            continue
        w, gamma, beta, mean, var = (
            numpy_helper.to_array(weights[name]).astype(np.float64) for name in names
        )
        if w.ndim != 2:
            continue
        eps = next((attr.f for attr in bn.attribute if attr.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        stem = bn.output[0]
        fused_w = numpy_helper.from_array((w * scale[None, :]).astype(np.float32), f"{stem}_folded_weight")
        fused_b = numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{stem}_folded_bias")
        graph.initializer.extend([fused_w, fused_b])
        gemm = onnx.helper.make_node(
            "Gemm", [matmul.input[0], fused_w.name, fused_b.name], [stem], name=f"{bn.name}_gemm"
        )
        index = list(graph.node).index(matmul)
        graph.node.remove(bn)
        graph.node.remove(matmul)
        graph.node.insert(index, gemm)
        folded += 1
    if folded:
        used = {name for node in graph.node for name in node.input}
        unused = [tensor for tensor in graph.initializer if tensor.name not in used]
        for tensor in unused:
            graph.initializer.remove(tensor)
    return folded


def exporter_order(exporter: str) -> tuple[str, ...]:
    """The exporters to try, in order: ``auto`` is all of them, a named one is only itself."""
    if exporter == AUTO:
        return EXPORTERS
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {[AUTO, *EXPORTERS]}")
    return (exporter,)


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
    """Random uint8 clips at N=1 and N=3 (the batch axis must really be dynamic).

    Built once at the largest frame count; ``clips_at`` gives each graph its first T frames.
    The N=1 clip is the first clip of the N=3 batch, so PyTorch runs once per graph
    (``torch_reference``); ONNX Runtime still runs both batch sizes.
    """
    three = np.random.default_rng(seed).integers(0, 256, (3, frames, size, size, 3), dtype=np.uint8)
    return [three[:1].copy(), three]


def torch_reference(wrapper: FramesToPredictions, clips: list[np.ndarray]) -> Runner:
    """PyTorch's outputs for ``clips``, computed once on the largest batch.

    A clip equal to that batch's leading rows gets those rows of its output (eval mode: the clips
    of a batch do not interact); any other clip is run on its own.
    """
    largest = max(clips, key=len)
    outputs = run_torch(wrapper, largest)

    def run(frames: np.ndarray) -> dict[str, np.ndarray]:
        if frames.shape[1:] == largest.shape[1:] and np.array_equal(frames, largest[: len(frames)]):
            return {name: value[: len(frames)] for name, value in outputs.items()}
        return run_torch(wrapper, frames)

    return run


def clips_at(clips: list[np.ndarray], frames: int) -> list[np.ndarray]:
    if any(clip.shape[1] < frames for clip in clips):
        raise ValueError(f"verification clips have fewer than {frames} frames")
    return [np.ascontiguousarray(clip[:, :frames]) for clip in clips]


@dataclass
class _Stages:
    """Seconds per stage of one graph's export, each logged as it ends."""

    frames: int
    log: Callable[[str], None]
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str, what: str = "") -> Iterator[list[str]]:
        """Time the block; whatever it appends to the yielded list ends the stage's log line."""
        notes: list[str] = []
        start = time.perf_counter()
        yield notes
        elapsed = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        detail = "".join(f", {note}" for note in notes)
        self.log(f"  [{self.frames}f] {name}{f' ({what})' if what else ''}: {elapsed:.1f}s{detail}")


def export_graph(
    wrapper: FramesToPredictions,
    metadata: GraphMetadata,
    path: Path,
    *,
    exporter: str | tuple[str, ...] = AUTO,
    clips: list[np.ndarray] | None = None,
    fp16: bool = False,
    log: Callable[[str], None] = print,
) -> list[GraphReport]:
    """Export one frame count; verify (checker + ORT vs PyTorch at N=1 and N=3); then write.

    ``exporter`` is ``auto`` or one of ``EXPORTERS`` (or a tuple of them, tried in order); with
    ``auto`` a graph that fails to export or fails verification is retried with the next exporter,
    and only the last one's error is raised. ``clips`` are the verification inputs
    (``verification_inputs``; built here if not given). Raises ExportVerificationError, writing
    nothing, if any output differs by more than the tolerance. With ``fp16`` also writes
    ``<stem>-fp16.onnx``, checked against the fp32 graph. Every report's ``exporter`` names the
    exporter that made the graph.
    """
    frames = metadata.frames
    clips = clips_at(clips if clips is not None else verification_inputs(frames, metadata.input_size), frames)
    order = exporter_order(exporter) if isinstance(exporter, str) else exporter
    for attempt, name in enumerate(order):
        try:
            return _export_graph_with(name, wrapper, metadata, path, clips, fp16=fp16, log=log)
        except ExportVerificationError as error:
            if attempt == len(order) - 1:
                raise
            log(f"  [{frames}f] the {name} exporter's graph failed ({error}); trying {order[attempt + 1]}")
    raise AssertionError("unreachable: exporter_order is never empty")


def _export_graph_with(
    exporter: str,
    wrapper: FramesToPredictions,
    metadata: GraphMetadata,
    path: Path,
    clips: list[np.ndarray],
    *,
    fp16: bool,
    log: Callable[[str], None],
) -> list[GraphReport]:
    start = time.perf_counter()
    size, frames = metadata.input_size, metadata.frames
    stage = _Stages(frames, log)
    with stage("trace", f"{exporter} exporter, opset {OPSET}") as notes:
        try:
            raw = trace_to_onnx(wrapper, frames, size, exporter)
        except Exception as error:  # the exporters raise many types; any of them means "no graph"
            raise ExportVerificationError(f"the {exporter} exporter failed: {error}") from error
        notes.append(f"{len(raw.graph.node)} nodes")
    with stage("simplify", "onnxslim") as notes:
        proto = simplify(raw)
        del raw
        attach_metadata(proto, metadata)
        proto_bytes = proto.SerializeToString()
        notes.append(f"{len(proto.graph.node)} nodes")
    with stage("verify", "onnx.checker; ONNX Runtime (CPU) vs PyTorch at N=1 and N=3"):
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as error:
            raise ExportVerificationError(f"onnx.checker rejects the {exporter} graph: {error}") from error
        fp32 = onnx_runner(proto_bytes)
        parity = _verify(
            torch_reference(wrapper, clips), fp32, clips, frames, "PyTorch", PARITY_TOLERANCE, log=log
        )
    outputs: list[tuple[Path, bytes]] = [(path, proto_bytes)]
    report = GraphReport(path, frames, parity, len(proto_bytes), op_counts(proto), 0.0, exporter=exporter)
    reports = [report]
    if fp16:
        half_start = time.perf_counter()
        with stage("fp16", "convert and verify against the fp32 graph"):
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
            GraphReport(
                half_path, frames, half_parity, len(half_bytes), op_counts(half), elapsed, "fp16", exporter
            )
        )
        outputs.append((half_path, half_bytes))
    with stage("write") as notes:
        for target, data in outputs:
            target.write_bytes(data)
        notes.append(", ".join(f"{target.name} {len(data) / 1e6:.1f} MB" for target, data in outputs))
    report.stages = dict(stage.seconds)
    report.seconds = time.perf_counter() - start
    return reports
