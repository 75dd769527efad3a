"""The naive baseline the service is measured against: what a first version would look like.

``python -m bench.naive GRAPH --port 8001``: FastAPI + PyTorch eager (the same architecture as
GRAPH, from its metadata) + decode every frame of the upload to RGB, then sample, resize, crop
and classify one request at a time (a plain ``def`` route: FastAPI runs it in its thread pool, with
no batching and no separate decode workers). Same sampling rule and preprocessing as the service, so
both answer the same question; only the way of getting there differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile

from bench.decode import decode_all_rgb
from bench.engine import graph_metadata
from bench.graphs import build_torch_model
from export.graph import FramesToPredictions
from videocore.sampling import sample_segment_indices
from videocore.views import resize_short_side_center_crop


def create_app(graph: Path) -> FastAPI:
    meta = graph_metadata(graph)
    # One intra-op thread: FastAPI's thread pool already runs requests in parallel, and two OpenMP
    # pools spinning on two cores collapse (measured: 5-15x slower per call when the cores are shared).
    torch.set_num_threads(1)
    model = build_torch_model(dict(meta.architecture), meta.frames)
    wrapper = FramesToPredictions(model, meta.mean, meta.std, meta.scale).eval()
    app = FastAPI(title="naive baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    def classify(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008 (FastAPI's idiom)
        every = decode_all_rgb(file.file.read())
        frames = np.stack([every[i] for i in sample_segment_indices(len(every), meta.frames, "test")])
        clip = resize_short_side_center_crop(frames, meta.resize_short_side, meta.input_size)[None]
        with torch.inference_mode():
            probs = wrapper(torch.from_numpy(np.ascontiguousarray(clip)))[1][0].numpy()
        top = np.argsort(-probs)[:5]
        return {
            "predictions": [{"index": int(i), "label": meta.labels[i], "score": float(probs[i])} for i in top]
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path, help="an exported graph: its architecture and preprocessing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.graph), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
