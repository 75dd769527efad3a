"""Static int8 quantisation (QDQ) of an exported fp32 graph, checked by accuracy instead of parity.

int8 cannot agree with PyTorch to 1e-4, so the check is what a user cares about: top-1 on held-out
synthetic clips (``model.data.synthetic``, seeds neither calibration nor training uses) must not
drop by more than ``max_top1_drop`` points against the fp32 graph. For a graph not trained on the
synthetic label set, accuracy there means nothing; its check is top-1 *agreement* with the fp32
graph on the same clips (at least ``100 - max_top1_drop`` % of them).

Calibration: ``calibration_clips`` synthetic clips, rendered at the graph's resize rule and centre-cropped
like the service does (no codec round trip: calibration needs the value ranges, not the artefacts).
Only Conv / Gemm are quantised (weights per channel, int8 symmetric; activations uint8): they hold
~all the FLOPs. The temporal shift, the QSA attention (its MatMuls and softmax) stay fp32: quantising
those MatMuls too cost the default model 2.1 points of top-1 at 16 frames (58.3 -> 56.2 % on 96
clips; 0.0 without). Activation ranges: min/max over the calibration clips.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.graph import mark_precision
from model.data.synthetic import NUM_CLASSES, SYNTHETIC_LABELS, render_clip
from videocore.contract import INPUT_NAME, PROBS, GraphMetadata, PrecisionCheck
from videocore.sampling import sample_segment_indices
from videocore.views import resize_short_side_center_crop

INT8_MAX_TOP1_DROP = 1.0  # points of top-1
CALIBRATION_SEED = 20261125  # neither the trainer (0.., 1000003) nor model.evaluate (20261124) uses it
EVALUATION_SEED = 20261126
QUANTISED_OPS = ("Conv", "Gemm")


class Int8VerificationError(RuntimeError):
    """The int8 graph loses more accuracy than allowed; nothing was written."""


@dataclass
class Int8Report:
    path: Path
    frames: int
    size_bytes: int
    seconds: float
    check: str  # "accuracy" (synthetic labels) or "agreement" (any other label set)
    fp32_top1: float | None
    int8_top1: float | None
    top1_agreement: float
    max_prob_diff: float
    eval_clips: int
    calibration_clips: int

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "frames": self.frames,
            "precision": "int8 (static QDQ)",
            "size_bytes": self.size_bytes,
            "check": self.check,
            "fp32_top1": self.fp32_top1,
            "int8_top1": self.int8_top1,
            "top1_agreement": self.top1_agreement,
            "max_prob_diff": self.max_prob_diff,
            "eval_clips": self.eval_clips,
            "calibration_clips": self.calibration_clips,
            "export_seconds": round(self.seconds, 2),
        }


def _check_of(report: Int8Report, max_top1_drop: float) -> PrecisionCheck:
    """The passed check, as the int8 graph's metadata records it."""
    return PrecisionCheck(
        method=report.check, passed=True, clips=report.eval_clips, tolerance=max_top1_drop,
        top1_agreement=report.top1_agreement, max_prob_diff=report.max_prob_diff,
        top1=report.int8_top1, fp32_top1=report.fp32_top1,
    )  # fmt: skip


def synthetic_inputs(meta: GraphMetadata, count: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """``count`` (1, T, S, S, 3) uint8 clips of the synthetic classes (balanced) and their labels."""

    clips, labels = [], []
    for index in range(count):
        label = index % NUM_CLASSES
        clip = render_clip(label, np.random.default_rng([seed, index]), short_side=meta.resize_short_side)
        picked = clip.frames[sample_segment_indices(len(clip.frames), meta.frames, "test")]
        clips.append(resize_short_side_center_crop(picked, meta.resize_short_side, meta.input_size)[None])
        labels.append(label)
    return clips, labels


def _session(model: str | bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def quantize_graph(proto: onnx.ModelProto, clips: list[np.ndarray]) -> onnx.ModelProto:
    """QDQ int8 graph of ``proto`` calibrated on ``clips``; metadata_props carried over."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._clips = iter(clips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            clip = next(self._clips, None)
            return None if clip is None else {INPUT_NAME: clip}

    # The quantiser warns on the root logger for every 1-D weight it cannot quantise per channel.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="sda-int8-") as tmp:
            source, prepared, quantised = (Path(tmp) / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
            onnx.save(proto, source)
            # Shape inference + ORT's basic (standard-op) optimisations, as ORT recommends first.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(quantised),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTISED_OPS),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # MinMax adds ReduceMin/ReduceMax per tensor: only scalars are collected per clip.
                calibrate_method=CalibrationMethod.MinMax,
            )
            result = onnx.load(str(quantised))
    finally:
        root.setLevel(level)
    del result.metadata_props[:]
    result.metadata_props.extend(proto.metadata_props)
    result.doc_string = proto.doc_string + " (int8 static QDQ)"
    return result


def _top1(session, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.concatenate([session.run([PROBS], {INPUT_NAME: clip})[0] for clip in clips])
    return probs.argmax(axis=1), probs


def export_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    calibration_clips: int = 24,
    eval_clips: int = 96,
    max_top1_drop: float = INT8_MAX_TOP1_DROP,
    log: Callable[[str], None] = print,
) -> Int8Report:
    """Quantise ``fp32_path`` to ``int8_path``; raises Int8VerificationError (writing nothing) when
    the int8 graph loses more than ``max_top1_drop`` points (see the module docstring)."""
    started = time.perf_counter()
    proto = onnx.load(str(fp32_path))
    fp32 = _session(str(fp32_path))
    meta = GraphMetadata.from_props(fp32.get_modelmeta().custom_metadata_map)
    log(f"  [{meta.frames}f] int8: calibrating on {calibration_clips} synthetic clips...")
    calibration, _ = synthetic_inputs(meta, calibration_clips, CALIBRATION_SEED)
    int8 = quantize_graph(proto, calibration)
    onnx.checker.check_model(int8)
    data = int8.SerializeToString()
    log(f"  [{meta.frames}f] int8: comparing with fp32 on {eval_clips} held-out synthetic clips...")
    clips, labels = synthetic_inputs(meta, eval_clips, EVALUATION_SEED)
    fp32_pred, fp32_probs = _top1(fp32, clips)
    int8_pred, int8_probs = _top1(_session(data), clips)
    truth = np.asarray(labels)
    agreement = float((fp32_pred == int8_pred).mean() * 100)
    report = Int8Report(
        int8_path, meta.frames, len(data), 0.0, "agreement", None, None, agreement,
        float(np.abs(int8_probs - fp32_probs).max()), eval_clips, calibration_clips,
    )  # fmt: skip
    if tuple(meta.labels) == tuple(SYNTHETIC_LABELS):
        report.check = "accuracy"
        report.fp32_top1 = float((fp32_pred == truth).mean() * 100)
        report.int8_top1 = float((int8_pred == truth).mean() * 100)
        drop = report.fp32_top1 - report.int8_top1
        log(
            f"  [{meta.frames}f] int8: top-1 {report.int8_top1:.1f} % vs fp32 {report.fp32_top1:.1f} % "
            f"(agreement {agreement:.1f} %)"
        )
        if drop > max_top1_drop:
            raise Int8VerificationError(
                f"{meta.frames}-frame int8 graph loses {drop:.1f} points of top-1 "
                f"(> {max_top1_drop}); nothing written"
            )
    else:
        log(f"  [{meta.frames}f] int8: top-1 agrees with fp32 on {agreement:.1f} % of clips")
        if agreement < 100.0 - max_top1_drop:
            raise Int8VerificationError(
                f"{meta.frames}-frame int8 graph agrees with fp32 on {agreement:.1f} % of top-1 "
                f"(< {100.0 - max_top1_drop}); nothing written"
            )
    mark_precision(int8, "int8", _check_of(report, max_top1_drop))
    data = int8.SerializeToString()
    int8_path.write_bytes(data)
    report.size_bytes = len(data)
    report.seconds = time.perf_counter() - started
    return report
