"""The classify pipeline: upload -> admission -> decode (in the pool) -> inference -> response.

Data flows one way: bytes -> frames -> tensor -> engine -> response. The route only builds
:class:`ClassifyOptions` and awaits :meth:`ClassifyPipeline.classify`; every refusal is a domain error
(:mod:`service.errors`) that the app's exception handlers answer. The steps (``check_ready``,
``check_views``, ``admitted``, ``decode``, ``run``, ``observe``) are public so the Open Inference
Protocol routes share admission, the decoder, the batcher and the metrics with /classify.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
from fastapi import Request

from service.batching import BatchResult
from service.engine import Engine, Graph
from service.errors import InvalidOptionError, NotReadyError, OverloadedError
from service.fairshare import DecodeTurns, Turn, give_back_memory
from service.model_io import dependency_summary, model_input, top_predictions
from service.oip.stats import InferenceStats
from service.retry import DrainRate
from service.thumbnails import jpeg_thumbnails
from service.upload import HeldUpload, UploadGate, UploadPolicy
from videocore.contract import PROBS
from videocore.decode import DecodeWarning, VideoInfo, VideoLimits, probe_and_decode, threads_per_decode
from videocore.errors import DecodeTimeoutError, VideoError
from videocore.sampling import index_chooser

NOT_READY_RETRY_AFTER_S = 5
DEFAULT_TOP_K = 5
ANSWER_GRACE_S = 0.5  # a decode still running this long after its deadline is answered anyway


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
    precision: str | None = None


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
    warnings: list[DecodeWarning]


def _decode_and_prepare(
    upload: IO[bytes],
    graph: Graph,
    options: ClassifyOptions,
    limits: VideoLimits,
    thumbnail_height: int | None,
    turn: Turn,
    threads: int,
    submitted: float,
) -> _Prepared:
    """Runs in the decode thread pool, holding a decoder turn from opening the file to the model's
    input and thumbnails (so the budget and deadline cover all of it). ``thumbnail_height``: None for
    no thumbnails; ``submitted``: when the job was handed to the pool (the wait for the first turn is
    the ``decode_wait`` stage)."""
    try:
        with turn:
            limits = replace(limits, checkpoint=turn.checkpoint)
            return _prepare_in_turn(upload, graph, options, limits, thumbnail_height, threads, submitted)
    except VideoError as error:
        # The traceback's frames hold the decoder and every frame decoded so far; dropped here, that
        # memory is freed (and trimmed below) now, not when the answer has been sent.
        error.__traceback__ = None
        raise
    finally:
        give_back_memory()


def _prepare_in_turn(
    upload: IO[bytes],
    graph: Graph,
    options: ClassifyOptions,
    limits: VideoLimits,
    thumbnail_height: int | None,
    threads: int,
    submitted: float,
) -> _Prepared:
    checkpoint = limits.checkpoint or (lambda _stage: None)
    started = time.perf_counter()
    decoded = probe_and_decode(
        upload,
        index_chooser(graph.meta.frames, options.clips),
        limits,
        resize_short_side=graph.meta.resize_short_side,
        threads=threads,
    )
    decoded_at = time.perf_counter()
    checkpoint("cropping")
    batch = model_input(decoded.clips, graph.meta, options.crops)
    done = time.perf_counter()
    thumbnails = None
    if thumbnail_height is not None:
        checkpoint("making thumbnails")
        made = jpeg_thumbnails(decoded.clips, thumbnail_height)
        thumbnails = {
            "format": "jpeg",
            "width": made.width,
            "height": made.height,
            "clips": made.clips,
            "encode_ms": round((time.perf_counter() - done) * 1000.0, 3),
        }
    checkpoint("finishing")
    return _Prepared(
        decoded.info,
        [list(map(int, idx)) for idx in decoded.indices],
        [[round(float(t), 6) for t in ts] for ts in decoded.timestamps_s],
        batch,
        (started - submitted) * 1000.0,
        (decoded_at - started) * 1000.0,
        (done - decoded_at) * 1000.0,
        thumbnails,
        decoded.warnings,
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
        s = self.settings = engine.settings
        self.metrics = engine.metrics
        self.decode_pool = decode_pool
        self.turns = DecodeTurns(s.decode_workers)
        self.stats = InferenceStats()
        self.drain = DrainRate()
        self.limits = VideoLimits(
            max_bytes=s.max_upload_bytes,
            max_pixels=s.max_pixels,
            max_duration_s=s.max_duration_s,
            max_decoded_frames=s.max_decoded_frames,
            timeout_s=s.decode_timeout_s,
            max_frame_pixels=s.max_frame_pixels,
            max_aspect_ratio=s.max_aspect_ratio,
            max_streams=s.max_streams,
        )
        self.uploads = UploadGate(
            UploadPolicy(
                max_bytes=s.max_upload_bytes,
                max_uploads=s.max_uploads,
                max_spool_bytes=s.max_spool_bytes,
                timeout_s=s.upload_timeout_s,
                min_bytes_per_s=s.upload_min_bytes_per_s,
                grace_s=s.upload_grace_s,
                max_parts=s.max_multipart_parts,
                max_part_header_bytes=s.max_multipart_header_bytes,
            )
        )
        self.decode_threads = s.decode_threads or threads_per_decode(s.decode_workers)

    # --- validation ---------------------------------------------------------------------------------
    def check_ready(self) -> None:
        if not self.engine.ready:
            raise NotReadyError(
                "the service is not ready (models loading or shutting down)", NOT_READY_RETRY_AFTER_S
            )

    def check_views(self, options: ClassifyOptions) -> None:
        """``crops`` and ``clips`` within what the service accepts."""
        if options.crops not in (1, 3):
            raise InvalidOptionError(f"crops must be 1 or 3, not {options.crops}")
        if options.clips > self.settings.max_clips:
            raise InvalidOptionError(
                f"clips must be between 1 and {self.settings.max_clips}, not {options.clips}"
            )

    def _validate(self, options: ClassifyOptions) -> tuple[Graph, int]:
        """The graph to run and the top_k to answer with; raises before any slot or byte is taken."""
        self.check_ready()
        self.check_views(options)
        graph = self.engine.resolve(options.model, options.version, options.frames, options.precision)
        num_classes = graph.meta.num_classes
        if options.top_k is None:
            return graph, min(DEFAULT_TOP_K, num_classes)
        if options.top_k > num_classes:
            raise InvalidOptionError(f"top_k must be between 1 and {num_classes} for model {graph.name!r}")
        return graph, options.top_k

    # --- the shared steps ---------------------------------------------------------------------------
    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """One of the engine's ``max_queue`` request slots for the body of the ``async with``, or
        :class:`OverloadedError` (503 + Retry-After from the measured drain rate, 1..30 s). Taken only
        once a request's body is complete: a slow upload holds no slot."""
        if not self.engine.ready:
            raise NotReadyError("the service is shutting down", NOT_READY_RETRY_AFTER_S)
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
            if self.engine.inflight == 0:  # idle: give the heap of the last requests back, off the loop
                asyncio.get_running_loop().run_in_executor(self.decode_pool, give_back_memory, True)

    async def decode(
        self,
        upload: IO[bytes],
        graph: Graph,
        options: ClassifyOptions,
        *,
        thumbnails: bool = False,
        on_overrun: HeldUpload | None = None,
    ) -> _Prepared:
        """Decode and sample ``upload`` for ``graph`` in the decode pool, taking turns at the decoder:
        the graph's input rows (clips x crops). Counts decode failures and warnings. The caller owns
        ``upload``; ``on_overrun`` is closed only when the decode thread ends, if it overruns."""
        thumbnail_height = self.settings.thumbnail_height if thumbnails else None
        turn = Turn(self.turns, self.settings.decode_budget_s, self.settings.decode_timeout_s)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            self.decode_pool,
            _decode_and_prepare,
            upload,
            graph,
            options,
            self.limits,
            thumbnail_height,
            turn,
            self.decode_threads,
            time.perf_counter(),
        )
        try:
            prepared = await self._answer_by_deadline(job, on_overrun)
        except VideoError as error:
            self.metrics.decode_failures.labels(type(error).__name__).inc()
            raise
        for warning in prepared.warnings:
            self.metrics.decode_warnings.labels(warning.kind).inc()
        return prepared

    async def _answer_by_deadline(
        self, job: asyncio.Future[_Prepared], upload: HeldUpload | None
    ) -> _Prepared:
        """The thread stops itself at its deadline; this answers even if one FFmpeg call overruns."""
        timeout_s = self.settings.decode_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_s + ANSWER_GRACE_S)
        except TimeoutError:
            if upload is not None:
                upload.close_after(job)  # the file is the thread's until it ends
            raise DecodeTimeoutError(
                f"decoding took longer than {timeout_s:g} s (setting decode_timeout_s)"
            ) from None

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

    # --- POST /classify -----------------------------------------------------------------------------
    async def classify(self, request: Request, options: ClassifyOptions) -> dict[str, object]:
        """Admission counts work, not waiting: the upload is received first (bounded by the upload
        gate), and only a complete body takes one of the ``max_queue`` decode/inference slots."""
        started = time.perf_counter()
        graph, top_k = self._validate(options)
        upload = await self.uploads.receive(request)
        upload_ms = (time.perf_counter() - started) * 1000.0
        try:
            async with self.admitted():
                prepared = await self.decode(
                    upload.file, graph, options, thumbnails=options.thumbnails, on_overrun=upload
                )
                result = await self.run(graph, prepared.batch, prepared.decode_ms + prepared.preprocess_ms)
        finally:
            upload.close()

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
                "precision": graph.precision,
                "provider": graph.provider,
            },
            "predictions": top_predictions(result.outputs[PROBS], graph.meta.labels, top_k),
            "dependency_weights": dependency_summary(result.outputs, graph.meta),
            "video": video_summary(prepared.info),
            "sampled": {"indices": prepared.indices, "timestamps_s": prepared.timestamps_s},
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
            "warnings": [{"kind": w.kind, "message": w.message} for w in prepared.warnings],
        }
        if prepared.thumbnails is not None:
            response["thumbnails"] = prepared.thumbnails
        return response
