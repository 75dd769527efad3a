"""Export a model to a model-repository version folder: one graph per frame count + model.json."""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import onnxruntime
import torch

from export.graph import (
    AUTO,
    FramesToPredictions,
    GraphReport,
    export_graph,
    exporter_order,
    verification_inputs,
)
from export.quantize import INT8_MAX_TOP1_DROP, Int8Report, export_int8
from model.network import VideoClassifier
from videocore.contract import GraphMetadata, eval_resize_short_side


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sda-serve")
    except PackageNotFoundError:
        return "0+unknown"


def graph_metadata(
    model: VideoClassifier,
    *,
    frames: int,
    size: int,
    labels: Sequence[str],
    model_name: str,
    version: str,
    training_data: str = "",
    source_sha256: str = "",
    default_frames: int | None = None,
) -> GraphMetadata:
    architecture = model.config.to_dict()
    architecture["num_frames"] = frames
    if not model.has_sda:
        for key in ("branches", "aggregation", "reduction"):
            architecture.pop(key)
    return GraphMetadata(
        model_name=model_name,
        model_version=str(version),
        labels=tuple(labels),
        frames=frames,
        input_size=size,
        resize_short_side=eval_resize_short_side(size),
        architecture=architecture,
        blocks=model.block_names,
        branches=model.branch_names,
        training_data=training_data,
        source_checkpoint_sha256=source_sha256,
        sda_serve_version=_version(),
        default_frames=default_frames,
    )


def export_model(
    model: VideoClassifier,
    out_dir: str | Path,
    *,
    frames: Sequence[int] = (8, 16),
    size: int = 224,
    labels: Sequence[str] | None = None,
    model_name: str = "model",
    version: str | int = 1,
    training_data: str = "",
    source_sha256: str = "",
    default_frames: int | None = None,
    fp16: bool = False,
    int8: bool = False,
    int8_max_top1_drop: float = INT8_MAX_TOP1_DROP,
    int8_clips: tuple[int, int] = (24, 96),
    exporter: str = AUTO,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write ``out_dir/model-{T}f.onnx`` for each T and ``out_dir/model.json``; verified or nothing.

    Everything is built in a temporary folder beside ``out_dir`` and moved into place only after
    every graph passed verification, so a failed export leaves no file behind. ``int8`` adds
    ``model-{T}f-int8.onnx`` (static QDQ, checked by accuracy: ``export.quantize``).
    ``default_frames`` (one of ``frames``) is the frame count the service uses when a request names
    none; without it the service uses the smallest one exported. ``exporter`` picks the torch.onnx
    exporter (``export.graph.EXPORTERS``, or ``auto``: see ``export.graph.EXPORTERS``).

    The frame count is baked into each graph, so each T is traced on its own; everything else is
    shared: the wrapper, the metadata, the verification clips (built once at the largest T), and
    the exporter ``auto`` settled on for the first graph is tried first for the others.
    """
    if labels is None:
        labels = [f"class {index}" for index in range(model.num_classes)]
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    if not frames or any(t < 1 for t in frames):
        raise ValueError(f"frame counts must be positive, got {list(frames)}")
    if default_frames is not None and default_frames not in frames:
        raise ValueError(f"default frame count {default_frames} is not among the exported {list(frames)}")
    order = exporter_order(exporter)  # rejects an unknown name before any work
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = model.eval()
    base = graph_metadata(
        model,
        frames=max(frames),
        size=size,
        labels=labels,
        model_name=model_name,
        version=str(version),
        training_data=training_data,
        source_sha256=source_sha256,
        default_frames=default_frames,
    )
    wrapper = FramesToPredictions(model, base.mean, base.std, base.scale).eval()
    clips = verification_inputs(max(frames), size)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        reports: list[GraphReport | Int8Report] = []
        metadata = base
        for count in frames:
            metadata = dataclasses.replace(
                base, frames=count, architecture={**base.architecture, "num_frames": count}
            )
            graph_reports = export_graph(
                wrapper, metadata, staging / f"model-{count}f.onnx", exporter=order, clips=clips, fp16=fp16,
                log=log,
            )  # fmt: skip
            # auto: an exporter that failed on this frame count is not tried again on the next
            order = order[order.index(graph_reports[0].exporter) :]
            for report in graph_reports:
                reports.append(report)
                log(
                    f"  [{count}f] {report.path.name}: {report.size_bytes / 1e6:.1f} MB, "
                    f"{sum(report.op_counts.values())} nodes, {report.exporter}, {report.seconds:.1f}s"
                )
            if int8:
                fp32_path = staging / f"model-{count}f.onnx"
                int8_path = fp32_path.with_name(f"model-{count}f-int8.onnx")
                calibration, evaluation = int8_clips
                report = export_int8(
                    fp32_path, int8_path, calibration_clips=calibration, eval_clips=evaluation,
                    max_top1_drop=int8_max_top1_drop, log=log,
                )  # fmt: skip
                reports.append(report)
        assert metadata is not None
        card = {
            "name": model_name,
            "version": str(version),
            "platform": "onnxruntime_onnx",
            "metadata": {k: v for k, v in metadata.to_props().items() if k != "frames"},
            "graphs": [report.to_dict() for report in reports],
            "exported_with": {
                "sda_serve": _version(),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version(),
            },
            "export_seconds": round(time.perf_counter() - started, 1),
        }
        (staging / "model.json").write_text(json.dumps(card, indent=2) + "\n")
        if out_dir.exists():
            for stale in [*out_dir.glob("model-*f*.onnx"), out_dir / "model.json"]:
                stale.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for item in sorted(staging.iterdir()):
            target = out_dir / item.name
            item.replace(target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
