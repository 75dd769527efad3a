"""python -m export CHECKPOINT --out DIR [--frames 8 16] [--official] [--fp16] [--int8] ...

Writes DIR/<model-name>/<version>/model-{T}f.onnx and model.json when --model-name is given
(a Triton-like model repository the service serves whole), else DIR/model-{T}f.onnx.
Prints one line per stage of each graph (trace, simplify, verify, write) with its time; --quiet
prints only errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from export.graph import AUTO, EXPORTERS, ExportVerificationError
from export.quantize import INT8_MAX_TOP1_DROP, Int8VerificationError
from model.checkpoint import file_sha256, load_checkpoint
from model.data.datasets import read_label_map
from model.network import VARIANTS
from model.official import CheckpointMismatchError, load_official_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument(
        "checkpoint", type=Path, help="a checkpoint of our trainer, or the authors' with --official"
    )
    parser.add_argument("--out", type=Path, required=True, help="model repository (or target folder)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="one graph per frame count")
    parser.add_argument(
        "--default-frames",
        type=int,
        help="the frame count served when a request names none, one of --frames "
        "(default: the service uses the smallest)",
    )
    parser.add_argument(
        "--name", choices=sorted(VARIANTS), help="architecture (--official; default sda_tsm_r50)"
    )
    parser.add_argument(
        "--labels", type=Path, help="label map, one class per line (default: the checkpoint's)"
    )
    parser.add_argument(
        "--size", type=int, help="input crop size (default: the checkpoint's, 224 for --official)"
    )
    parser.add_argument("--official", action="store_true", help="CHECKPOINT is an authors' released .pth.tar")
    parser.add_argument("--fp16", action="store_true", help="also write an fp16 graph (fp32 inputs/outputs)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write a static int8 (QDQ) graph, calibrated and checked on synthetic clips",
    )
    parser.add_argument(
        "--int8-max-drop",
        type=float,
        default=INT8_MAX_TOP1_DROP,
        help="most top-1 points the int8 graph may lose (agreement with fp32 for non-synthetic labels)",
    )
    parser.add_argument(
        "--int8-clips",
        type=int,
        nargs=2,
        default=(24, 96),
        metavar=("CALIBRATION", "EVALUATION"),
        help="synthetic clips to calibrate the int8 graph on and to check it on",
    )
    parser.add_argument(
        "--exporter",
        choices=[AUTO, *EXPORTERS],
        default=AUTO,
        help="torch.onnx exporter; auto: torchscript (faster), dynamo if its graph fails the checks",
    )
    parser.add_argument("--quiet", action="store_true", help="print errors only (for scripts)")
    parser.add_argument("--model-name", help="model id in the repository: writes OUT/ID/VERSION/")
    parser.add_argument("--version", default="1", help="model version folder (with --model-name)")
    parser.add_argument(
        "--triton",
        type=Path,
        metavar="DIR",
        help="also write a Triton model repository: DIR/<name>-<T>f/ (config.pbtxt, labels.txt, "
        "VERSION/model.onnx)",
    )
    parser.add_argument(
        "--triton-max-batch-size", type=int, default=8, help="max_batch_size of the Triton models"
    )
    parser.add_argument("--training-data", default=None, help="what the model was trained on (metadata)")
    args = parser.parse_args(argv)
    if args.default_frames is not None and args.default_frames not in args.frames:
        print(
            f"error: --default-frames {args.default_frames} is not one of --frames {args.frames}",
            file=sys.stderr,
        )
        return 2

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    started = time.perf_counter()
    try:
        say(f"loading {args.checkpoint} ...")
        if args.official:
            model = load_official_checkpoint(args.checkpoint, args.name or "sda_tsm_r50", args.frames[0])
            labels = None
            size = args.size or 224
            training_data = args.training_data or "authors' released checkpoint"
        else:
            model, info = load_checkpoint(args.checkpoint)
            if args.name and args.name != model.config.name:
                raise CheckpointMismatchError(
                    f"{args.checkpoint} holds a {model.config.name}, not the requested {args.name}"
                )
            labels = info.labels
            size = args.size or info.input_size
            training_data = args.training_data or info.training_data
        if args.labels:
            labels = read_label_map(args.labels)
        sha256 = file_sha256(args.checkpoint)
        say(f"loaded in {time.perf_counter() - started:.1f}s")
    except (CheckpointMismatchError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from export.build import export_model

    out_dir = args.out / args.model_name / str(args.version) if args.model_name else args.out
    try:
        written = export_model(
            model,
            out_dir,
            frames=args.frames,
            size=size,
            labels=labels,
            model_name=args.model_name or model.config.name,
            version=args.version,
            training_data=training_data,
            source_sha256=sha256,
            default_frames=args.default_frames,
            fp16=args.fp16,
            int8=args.int8,
            int8_max_top1_drop=args.int8_max_drop,
            int8_clips=tuple(args.int8_clips),
            exporter=args.exporter,
            log=say,
        )
    except (ExportVerificationError, Int8VerificationError, ValueError) as error:
        print(f"error: export failed: {error}", file=sys.stderr)
        return 1
    for path in written:
        say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.triton:
        from export.triton import write_triton_repository

        version = str(args.version) if str(args.version).isdigit() else "1"
        for model_dir in write_triton_repository(
            written, args.triton, version=version, max_batch_size=args.triton_max_batch_size,
            name=args.model_name,
        ):  # fmt: skip
            say(f"wrote Triton model {model_dir}")
    say(f"done in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
