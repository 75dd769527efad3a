"""Held-out accuracy of an exported graph on fresh synthetic clips, measured the way it is served.

``python -m model.evaluate models/sda-tsm-synthetic/8/model-16f.onnx --clips 600 --seed 7 --out DIR``

Each clip is rendered by ``model.data.synthetic`` from a seed the trainer never uses, encoded to
H.264 MP4 in memory, decoded and sampled by the service's own code (segment centres, resize short
side, centre crop) and run through ONNX Runtime: the number a user of the service would see.
Writes ``evaluation.json`` (top-1, top-5, per-class top-1, confusion matrix) and ``confusion.png``.
``--renderer independent`` scores clips of ``model.data.independent`` instead: the same 12 classes drawn
by a second renderer that shares no code, shapes or motion laws with the training generator, which
tells whether a model learned the motions or the look of the generator it was trained on.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort

from model.data.independent import render_independent_clip
from model.data.synthetic import SYNTHETIC_LABELS, render_clip
from videocore.contract import INPUT_NAME, PROBS, GraphMetadata
from videocore.decode import VideoLimits, probe_and_decode
from videocore.sampling import sample_segment_indices
from videocore.views import resize_short_side_center_crop


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
    """H.264 MP4 bytes of (F, H, W, 3) uint8 frames, as a phone or screen recorder would deliver."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def served_input(video: bytes, frames: int, resize_short_side: int, input_size: int) -> np.ndarray:
    """(1, T, S, S, 3) uint8 exactly as the service builds it for clips=1, crops=1."""
    decoded = probe_and_decode(
        video,
        lambda n: [sample_segment_indices(n, frames, "test")],
        # Offline scoring has no caller waiting: a wall-clock limit would only turn a busy (or paused)
        # machine into failed evaluations.
        VideoLimits(timeout_s=24 * 3600.0),
        resize_short_side=resize_short_side,
    )
    return resize_short_side_center_crop(decoded.clips[0], resize_short_side, input_size)[None]


def plot_confusion(confusion: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(9, 8))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if confusion[i, j]:
                axes.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    short = [f"{i} {label[:28]}" for i, label in enumerate(labels)]
    axes.set_xticks(range(len(labels)), [str(i) for i in range(len(labels))])
    axes.set_yticks(range(len(labels)), short, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


RENDERERS = ("synthetic", "independent")
Predictor = Callable[[np.ndarray], np.ndarray]  # (1, T, S, S, 3) uint8 -> (K,) probabilities


def onnx_predictor(graph: Path) -> tuple[Predictor, GraphMetadata]:
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    meta = GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    return (lambda frames: session.run([PROBS], {INPUT_NAME: frames})[0][0]), meta


def reversed_pair_accuracy(confusion_probs: list[tuple[int, np.ndarray]]) -> float:
    """Share of clips of the time-reversed pairs (classes 0-9: 0/1, 2/3, ...) whose true class scores
    above its reversed partner. A model blind to frame order scores 0.5 in expectation: a clip of the
    odd class is an even-class clip played backwards, so both classes' clips show the same frames."""
    hits = [probs[label] > probs[label ^ 1] for label, probs in confusion_probs if label < 10]
    return float(np.mean(hits)) if hits else float("nan")


def evaluate_on_fresh_clips(
    predict: Predictor,
    *,
    frames: int,
    resize_short_side: int,
    input_size: int,
    clips: int,
    seed: int,
    render_short_side: int,
    plain: bool = False,
    renderer: str = "synthetic",
) -> dict[str, Any]:
    """Top-1/top-5, per-class top-1, the confusion matrix and the reversed-pair accuracy on ``clips``
    fresh synthetic clips (balanced over the classes), each going through H.264 and the service's
    decode, sampling, resize and crop. ``plain``: the plain renders (no nuisances) instead;
    ``renderer="independent"``: clips of the independent renderer (``model.data.independent``)."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, not {renderer!r}")
    classes = len(SYNTHETIC_LABELS)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    top5, scored = 0, []
    started = time.perf_counter()
    for index in range(clips):
        label = index % classes
        rng = np.random.default_rng([seed, index])
        if renderer == "independent":
            clip = render_independent_clip(label, rng, short_side=render_short_side)
        else:
            clip = render_clip(label, rng, short_side=render_short_side, plain=plain)
        video = encode_mp4(clip.frames, clip.fps)
        probs = predict(served_input(video, frames, resize_short_side, input_size))
        ranking = np.argsort(-probs)
        confusion[label, ranking[0]] += 1
        top5 += int(label in ranking[:5])
        scored.append((label, probs))
    per_class = (confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)).tolist()
    return {
        "frames": frames,
        "clips": clips,
        "seed": seed,
        "render_short_side": render_short_side,
        "plain": plain,
        "renderer": renderer,
        "top1": float(confusion.diagonal().sum() / clips),
        "top5": top5 / clips,
        "reversed_pair_accuracy": reversed_pair_accuracy(scored),
        "per_class_top1": dict(zip(SYNTHETIC_LABELS, per_class, strict=True)),
        "confusion": confusion.tolist(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path)
    parser.add_argument("--clips", type=int, default=600, help="fresh clips, balanced over the classes")
    parser.add_argument("--seed", type=int, default=20261124, help="the trainer uses seeds 0.. and 1000003")
    parser.add_argument("--short-side", type=int, default=256, help="render size of the fresh clips")
    parser.add_argument(
        "--renderer",
        choices=RENDERERS,
        default="synthetic",
        help="synthetic: the training generator's clips (fresh seeds); independent: a second renderer "
        "that shares no code with it (model.data.independent)",
    )
    parser.add_argument("--out", type=Path, help="folder for evaluation.json and confusion.png")
    args = parser.parse_args(argv)

    predict, meta = onnx_predictor(args.graph)
    if list(meta.labels) != list(SYNTHETIC_LABELS):
        print("error: this graph was not trained on the synthetic label set", file=sys.stderr)
        return 2
    result = {
        "graph": str(args.graph),
        **evaluate_on_fresh_clips(
            predict, frames=meta.frames, resize_short_side=meta.resize_short_side,
            input_size=meta.input_size, clips=args.clips, seed=args.seed, render_short_side=args.short_side,
            renderer=args.renderer,
        ),
    }  # fmt: skip
    print(
        f"{args.graph}: top-1 {result['top1']:.3f}, top-5 {result['top5']:.3f}, reversed pairs "
        f"{result['reversed_pair_accuracy']:.3f} on {args.clips} fresh {args.renderer} clips"
    )
    for label, accuracy in result["per_class_top1"].items():
        print(f"  {accuracy:6.3f}  {label}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = f"{meta.frames}f" + ("-independent" if args.renderer == "independent" else "")
        (args.out / f"evaluation-{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_confusion(
            np.array(result["confusion"]),
            list(meta.labels),
            args.out / f"confusion-{suffix}.png",
            f"{meta.model_name} ({meta.frames}f): top-1 {result['top1']:.1%} on {args.clips} fresh "
            f"{args.renderer} clips",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
