"""What an exported graph says about itself: the ONNX ``metadata_props`` contract.

Written by the export stage, read by the service and the evaluator (and by any other runtime). Every
value is a string; structured values are JSON.

Graph contract:
- input ``frames``: uint8 RGB (N, T, S, S, 3), N dynamic; the frames are already resized (short
  side ``resize_short_side``) and centre-cropped to S = ``input_size``. Conversion to float, /scale,
  mean/std normalisation and the layout change happen inside the graph.
- outputs ``logits`` (N, K) float32, ``probs`` (N, K) float32 (softmax of logits), and for models
  with SDA ``dependency_weights`` (N, B, M) float32: per block (``blocks``) the aggregation weights
  of each branch (``branches``).
- optional ``default_frames``: the frame count the service uses when a request names none (the
  model card's); absent, the smallest exported one.
- optional ``precision`` (``fp32`` when absent, ``fp16``, ``int8``) and, for a variant other than
  fp32, ``precision_check``: JSON of the check the export made against the fp32 graph
  (:class:`PrecisionCheck`). The service serves a variant only when that check is recorded and
  passed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

INPUT_NAME = "frames"
LOGITS = "logits"
PROBS = "probs"
DEPENDENCY_WEIGHTS = "dependency_weights"
FORMAT_VERSION = "1"

FP32 = "fp32"
PRECISIONS = (FP32, "fp16", "int8")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize_short_side(input_size: int) -> int:
    """The paper's test resize, 256 for a 224 crop, scaled to other crop sizes."""
    return round(input_size * 256 / 224)


@dataclass(frozen=True)
class PrecisionCheck:
    """How a reduced-precision variant was checked against its fp32 graph at export.

    ``method``: ``parity`` (outputs on the export's verification clips within ``tolerance``),
    ``accuracy`` (top-1 on labelled held-out clips may drop at most ``tolerance`` points) or
    ``agreement`` (top-1 equal to fp32's on at least ``100 - tolerance`` % of the clips).
    """

    method: str
    passed: bool
    clips: int
    tolerance: float
    top1_agreement: float  # % of clips whose top-1 class equals the fp32 graph's
    max_prob_diff: float
    top1: float | None = None  # accuracy method: this variant's top-1 %, and the fp32 graph's
    fp32_top1: float | None = None

    def to_json(self) -> str:
        return json.dumps(dict(self.__dict__))

    @classmethod
    def from_json(cls, text: str) -> PrecisionCheck:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("precision_check must be a JSON object")
        return cls(
            method=str(data["method"]),
            passed=data["passed"] is True,
            clips=int(data["clips"]),
            tolerance=float(data["tolerance"]),
            top1_agreement=float(data["top1_agreement"]),
            max_prob_diff=float(data["max_prob_diff"]),
            top1=None if data.get("top1") is None else float(data["top1"]),
            fp32_top1=None if data.get("fp32_top1") is None else float(data["fp32_top1"]),
        )


@dataclass(frozen=True)
class GraphMetadata:
    """Everything needed to serve one graph, as stored in its ``metadata_props``."""

    model_name: str
    model_version: str
    labels: tuple[str, ...]
    frames: int
    input_size: int
    resize_short_side: int
    architecture: Mapping[str, object]
    blocks: tuple[str, ...] = ()
    branches: tuple[str, ...] = ()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float = 255.0
    crop: str = "center"
    sampling: str = "tsn-segment-centres"
    color: str = "RGB"
    training_data: str = ""
    source_checkpoint_sha256: str = ""
    sda_serve_version: str = ""
    # The frame count a request that names none is served at: the one the model card's accuracy is
    # measured at. None (older exports): the service uses the smallest frame count exported.
    default_frames: int | None = None
    precision: str = FP32
    precision_check: PrecisionCheck | None = None  # None for fp32 (the reference itself)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def has_dependency_weights(self) -> bool:
        return bool(self.blocks)

    def to_props(self) -> dict[str, str]:
        props = {
            "sda_serve.format": FORMAT_VERSION,
            "sda_serve.version": self.sda_serve_version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "labels": json.dumps(list(self.labels)),
            "frames": str(self.frames),
            "input_size": str(self.input_size),
            "resize": json.dumps(
                {"short_side": self.resize_short_side, "crop": self.crop, "crop_size": self.input_size}
            ),
            "normalization": json.dumps(
                {"mean": list(self.mean), "std": list(self.std), "scale": self.scale, "color": self.color}
            ),
            "sampling": self.sampling,
            "blocks": json.dumps(list(self.blocks)),
            "branches": json.dumps(list(self.branches)),
            "architecture": json.dumps(dict(self.architecture)),
            "training_data": self.training_data,
            "source_checkpoint_sha256": self.source_checkpoint_sha256,
        }
        if self.default_frames is not None:
            props["default_frames"] = str(self.default_frames)
        if self.precision != FP32:
            props["precision"] = self.precision
        if self.precision_check is not None:
            props["precision_check"] = self.precision_check.to_json()
        return props

    def refusal(self) -> str | None:
        """Why this graph must not be served (a reduced-precision variant whose check against fp32 is
        missing or failed), or None."""
        if self.precision not in PRECISIONS:
            return f"unknown precision {self.precision!r} (expected one of {', '.join(PRECISIONS)})"
        if self.precision == FP32:
            return None
        check = self.precision_check
        if check is None:
            return f"{self.precision} graph records no accuracy check against fp32"
        if not check.passed:
            return (
                f"{self.precision} graph failed its {check.method} check against fp32 "
                f"(top-1 agreement {check.top1_agreement:.1f} % on {check.clips} clips)"
            )
        return None

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> GraphMetadata:
        """Parse metadata written by ``to_props``; raises ValueError naming what is missing or wrong."""
        if props.get("sda_serve.format") != FORMAT_VERSION:
            raise ValueError(
                f"not an sda-serve graph (metadata 'sda_serve.format' is {props.get('sda_serve.format')!r},"
                f" expected {FORMAT_VERSION!r})"
            )
        try:
            resize = json.loads(props["resize"])
            normalization = json.loads(props["normalization"])
            labels = tuple(json.loads(props["labels"]))
            meta = cls(
                model_name=props["model_name"],
                model_version=props["model_version"],
                labels=labels,
                frames=int(props["frames"]),
                input_size=int(props["input_size"]),
                resize_short_side=int(resize["short_side"]),
                crop=str(resize["crop"]),
                architecture=json.loads(props["architecture"]),
                blocks=tuple(json.loads(props["blocks"])),
                branches=tuple(json.loads(props["branches"])),
                mean=tuple(float(v) for v in normalization["mean"]),
                std=tuple(float(v) for v in normalization["std"]),
                scale=float(normalization["scale"]),
                color=str(normalization["color"]),
                sampling=props["sampling"],
                training_data=props.get("training_data", ""),
                source_checkpoint_sha256=props.get("source_checkpoint_sha256", ""),
                sda_serve_version=props.get("sda_serve.version", ""),
                default_frames=int(props["default_frames"]) if "default_frames" in props else None,
                precision=props.get("precision", FP32),
                precision_check=(
                    PrecisionCheck.from_json(props["precision_check"]) if "precision_check" in props else None
                ),
            )
        except KeyError as error:
            raise ValueError(f"graph metadata lacks {error.args[0]!r}") from error
        except (TypeError, ValueError) as error:  # ValueError: bad JSON, int() of a non-number
            raise ValueError(f"graph metadata is malformed: {error}") from error
        if not labels or any(not isinstance(label, str) for label in labels):
            raise ValueError("graph metadata 'labels' must be a non-empty list of strings")
        return meta
