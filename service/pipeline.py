"""The classify pipeline: admission -> upload -> decode (in the pool) -> inference -> response.

Data flows one way: bytes -> frames -> tensor -> engine -> response. The route only builds
:class:`ClassifyOptions` and awaits :meth:`ClassifyPipeline.classify`; every refusal is a domain error
(:mod:`service.errors`) that the app's exception handlers answer.

The steps are public so that the Open Inference Protocol routes (:mod:`service.oip`) share them with
/classify: :meth:`ClassifyPipeline.check_ready`, :meth:`ClassifyPipeline.admitted` (one request slot),
:meth:`ClassifyPipeline.decode` (a file -> the graph's input rows, in the decode pool),
:meth:`ClassifyPipeline.run` (the engine's batcher) and :meth:`ClassifyPipeline.observe` (stage metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO

import numpy as np
from fastapi import Request

from service.batching import BatchResult
from service.engine import Engine, Graph
from service.errors import InvalidOptionError, NotReadyError, OverloadedError
from service.model_io import dependency_summary, model_input, top_predictions
from service.oip.stats import InferenceStats
from service.retry import DrainRate
from service.thumbnails import jpeg_thumbnails
from service.upload import read_upload
from videocore.contract import PROBS
from videocore.decode import VideoInfo, VideoLimits, probe_and_decode
from videocore.errors import VideoError
from videocore.sampling import index_chooser

NOT_READY_RETRY_AFTER_S = 5
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ClassifyOptions:
    """What a request asks for; ``None`` means the model's default."""

    frames: int | None = None
    top_k: int | None = None
    clips: int = 1
    crops: int = 1
    model: str | None = None
    version: str | None = None
    thumbnails: bool = False


@dataclass
class _Prepared:
    info: VideoInfo
    indices: list[list[int]]
    timestamps_s: list[list[float]]
    batch: np.ndarray
    decode_wait_ms: float
    decode_ms: float
    preprocess_ms: float
    thumbnails: dict[str, object] | None


def _decode_and_prepare(
    upload: IO[bytes],
    graph: Graph,
    options: ClassifyOptions,
    limits: VideoLimits,
    thumbnail_height: int | None,
    submitted: float,
) -> _Prepared:
    """Runs in the decode thread pool. ``thumbnail_height``: None for no thumbnails; ``submitted``: when
    the job was handed to the pool (the wait for a free decoder is the ``decode_wait`` stage)."""
    started = time.perf_counter()
    decoded = probe_and_decode(
        upload,
        index_chooser(graph.meta.frames, options.clips),
        limits,
        resize_short_side=graph.meta.resize_short_side,
    )
    decoded_at = time.perf_counter()
    batch = model_input(decoded.clips, graph.meta, options.crops)
    done = time.perf_counter()
    thumbnails = None
    if thumbnail_height is not None:
        made = jpeg_thumbnails(decoded.clips, thumbnail_height)
        thumbnails = {
            "format": "jpeg",
            "width": made.width,
            "height": made.height,
            "clips": made.clips,
            "encode_ms": round((time.perf_counter() - done) * 1000.0, 3),
        }
    return _Prepared(
        decoded.info,
        [list(map(int, idx)) for idx in decoded.indices],
        [[round(float(t), 6) for t in ts] for ts in decoded.timestamps_s],
        batch,
        (started - submitted) * 1000.0,
        (decoded_at - started) * 1000.0,
        (done - decoded_at) * 1000.0,
        thumbnails,
    )


def video_summary(info: VideoInfo) -> dict[str, object]:
    return {
        "container": str(info.container),
        "codec": str(info.codec),
        "width": int(info.width),
        "height": int(info.height),
        "fps": None if info.fps is None else float(info.fps),
        "duration_s": None if info.duration_s is None else float(info.duration_s),
        "frames": int(info.frames),
        "rotation": int(info.rotation or 0),
    }


class ClassifyPipeline:
    """One per app: built in the lifespan with the engine, the decode pool and the limits."""

    def __init__(self, engine: Engine, decode_pool: Executor) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.metrics = engine.metrics
        self.decode_pool = decode_pool
        self.stats = InferenceStats()
        self.drain = DrainRate()
        self.limits = VideoLimits(
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_pixels,
            max_duration_s=self.settings.max_duration_s,
            max_decoded_frames=self.settings.max_decoded_frames,
            timeout_s=self.settings.decode_timeout_s,
        )

    def check_ready(self) -> None:
        if not self.engine.ready:
            raise NotReadyError(
                "the service is not ready (models loading or shutting down)", NOT_READY_RETRY_AFTER_S
            )

    def _validate(self, options: ClassifyOptions) -> tuple[Graph, int]:
        """The graph to run and the top_k to answer with; raises before any slot or byte is taken."""
        self.check_ready()
        self.check_views(options)
        graph = self.engine.resolve(options.model, options.version, options.frames)
        num_classes = graph.meta.num_classes
        if options.top_k is None:
            return graph, min(DEFAULT_TOP_K, num_classes)
        if options.top_k > num_classes:
            raise InvalidOptionError(f"top_k must be between 1 and {num_classes} for model {graph.name!r}")
        return graph, options.top_k

    def check_views(self, options: ClassifyOptions) -> None:
        """``crops`` and ``clips`` within what the service accepts."""
        if options.crops not in (1, 3):
            raise InvalidOptionError(f"crops must be 1 or 3, not {options.crops}")
        if options.clips > self.settings.max_clips:
            raise InvalidOptionError(
                f"clips must be between 1 and {self.settings.max_clips}, not {options.clips}"
            )

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One of the engine's ``max_queue`` request slots for the body of the ``async with``, or
        :class:`OverloadedError` (503 + Retry-After from the measured drain rate, 1..30 s)."""
        if not self.engine.try_admit():
            self.metrics.rejected.inc()
            retry_after = self.drain.retry_after_s(self.engine.inflight)
            raise OverloadedError(
                f"overloaded: {self.settings.max_queue} requests already in flight; "
                f"retry after {retry_after} s",
                retry_after,
            )
        try:
            yield
        finally:
            self.engine.release()
            self.drain.finished()

    async def decode(
        self, upload: IO[bytes], graph: Graph, options: ClassifyOptions, *, thumbnails: bool = False
    ) -> _Prepared:
        """Decode and sample ``upload`` for ``graph`` in the decode pool: the graph's input rows
        (clips x crops). Counts decode failures. The caller owns (and closes) ``upload``."""
        thumbnail_height = self.settings.thumbnail_height if thumbnails else None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.decode_pool,
                _decode_and_prepare,
                upload,
                graph,
                options,
                self.limits,
                thumbnail_height,
                time.perf_counter(),
            )
        except VideoError as error:
            self.metrics.decode_failures.labels(type(error).__name__).inc()
            raise

    async def run(self, graph: Graph, batch: np.ndarray, input_ms: float = 0.0) -> BatchResult:
        """The graph's outputs for ``batch`` through its dynamic batcher (shared by every route);
        recorded in :attr:`stats` (``input_ms``: the time spent making ``batch``)."""
        key = (graph.name, graph.version, graph.frames)
        started = time.perf_counter()
        try:
            result = await self.engine.infer(graph, batch)
        except Exception:
            self.stats.failure(key, (time.perf_counter() - started) * 1000.0)
            raise
        self.stats.success(key, int(batch.shape[0]), input_ms, result.queue_ms, result.inference_ms)
        return result

    def observe(self, timings: dict[str, float]) -> None:
        """Stage latencies (milliseconds) into the stage histograms."""
        for stage, ms in timings.items():
            self.metrics.observe_stage(stage, ms / 1000.0)

    async def _prepare(
        self, request: Request, graph: Graph, options: ClassifyOptions
    ) -> tuple[float, _Prepared]:
        """(upload milliseconds, the decoded request)."""
        started = time.perf_counter()
        upload = await read_upload(request, self.settings.max_upload_bytes)
        upload_ms = (time.perf_counter() - started) * 1000.0
        try:
            return upload_ms, await self.decode(upload, graph, options, thumbnails=options.thumbnails)
        finally:
            upload.close()

    async def classify(self, request: Request, options: ClassifyOptions) -> dict[str, object]:
        started = time.perf_counter()
        graph, top_k = self._validate(options)
        async with self.admitted():
            upload_ms, prepared = await self._prepare(request, graph, options)
            result = await self.run(graph, prepared.batch, prepared.decode_ms + prepared.preprocess_ms)

        timings = {
            "upload": upload_ms,
            "decode_wait": prepared.decode_wait_ms,
            "decode": prepared.decode_ms,
            "preprocess": prepared.preprocess_ms,
            "queue": result.queue_ms,
            "inference": result.inference_ms,
            "total": (time.perf_counter() - started) * 1000.0,
        }
        self.observe(timings)
        response: dict[str, object] = {
            "model": {
                "name": graph.name,
                "version": graph.version,
                "frames": graph.frames,
                "provider": graph.provider,
            },
            "predictions": top_predictions(result.outputs[PROBS], graph.meta.labels, top_k),
            "dependency_weights": dependency_summary(result.outputs, graph.meta),
            "video": video_summary(prepared.info),
            "sampled": {"indices": prepared.indices, "timestamps_s": prepared.timestamps_s},
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        }
        if prepared.thumbnails is not None:
            response["thumbnails"] = prepared.thumbnails
        return response
