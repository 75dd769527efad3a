"""POST /timeline: an untrimmed video -> per-window actions and dependency weights, and labelled segments.

One decode pass (:func:`videocore.decode.decode_windows`) runs in the decode pool, taking decoder turns
like /classify; each window's frames are cropped into one graph row in the decoding thread as soon as
they are decoded and handed to the event loop, which runs the rows through the engine's batcher in
batches of up to ``max_batch_size`` while decoding goes on. At most ``PENDING_BATCHES`` batches of rows
wait for inference: beyond, the decoding thread waits (without holding its decoder turn), so memory is
bounded by the windows in flight, not by the video's length.

:meth:`TimelineRunner.events` is an async generator: its first item (``None``) comes once the upload
is received, a request slot admitted and the video probed and its windows planned, so every refusal
up to there (limits, undecodable file, overload) is an ordinary HTTP error; then one event per window
in time order, and last the summary (segments, video, timings). Closing the generator early (a client
that disconnected from the stream) stops the decoding at its next checkpoint.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np
from fastapi import Request

from service.engine import Graph
from service.errors import InvalidOptionError
from service.fairshare import Turn, give_back_memory
from service.model_io import model_input, top_predictions
from service.pipeline import ClassifyPipeline, video_summary
from videocore.contract import DEPENDENCY_WEIGHTS, PROBS
from videocore.decode import DecodedVideo, VideoInfo, VideoLimits, decode_windows
from videocore.errors import DecodeTimeoutError, VideoError, VideoLimitError
from videocore.timeline import DEFAULT_SMOOTH, Window, plan_windows, segments

DEFAULT_WINDOW_S = 4.0  # when the model's metadata states no training clip length
PENDING_BATCHES = 2
MIN_WINDOW_S = 0.25


@dataclass(frozen=True)
class TimelineOptions:
    window_s: float | None = None
    stride_s: float | None = None
    frames: int | None = None
    top_k: int | None = None
    model: str | None = None
    version: str | None = None
    min_score: float = 0.0
    smooth: int = DEFAULT_SMOOTH
    precision: str | None = None


class _Cancelled(Exception):
    """The request went away: the decoding thread stops."""


def default_window_s(graph: Graph) -> float:
    """The model's training clip length in seconds if its architecture metadata states one
    (``clip_seconds``), else :data:`DEFAULT_WINDOW_S`."""
    stated = graph.meta.architecture.get("clip_seconds")
    return float(stated) if isinstance(stated, int | float) and stated > 0 else DEFAULT_WINDOW_S


def stage_weights(weights: np.ndarray | None, graph: Graph) -> dict[str, dict[str, float]]:
    """One row's (blocks, branches) SDA weights -> per ResNet stage mean weight of each branch."""
    meta = graph.meta
    if weights is None or not meta.has_dependency_weights:
        return {}
    rows: dict[str, list[np.ndarray]] = {}
    for block, row in zip(meta.blocks, np.asarray(weights, dtype=np.float64), strict=True):
        rows.setdefault(block.split(".")[0], []).append(row)
    return {
        stage: {b: round(float(w), 6) for b, w in zip(meta.branches, np.mean(r, axis=0), strict=True)}
        for stage, r in rows.items()
    }


class _Work:
    """One request's decoding thread and the queue it feeds (thread -> event loop)."""

    def __init__(self, runner: TimelineRunner, graph: Graph, options: TimelineOptions) -> None:
        settings = runner.pipeline.settings
        self.runner = runner
        self.graph = graph
        self.window_s = options.window_s or default_window_s(graph)
        self.stride_s = options.stride_s or self.window_s / 2
        self.max_duration_s = settings.max_timeline_duration_s
        self.max_windows = settings.max_timeline_windows
        self.batch = max(1, settings.max_batch_size)
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.room = threading.Semaphore(self.batch * PENDING_BATCHES)
        self.windows: list[Window] = []
        self.preprocess_s = 0.0
        self.finished: asyncio.Future[DecodedVideo] | None = None

    def finish(self, job: asyncio.Future[DecodedVideo]) -> None:
        """The decoding thread ended (in the event loop): its future is the queue's last item. Its
        exception counts as retrieved even if nobody reads the queue any more (a cancelled request)."""
        if not job.cancelled():
            job.exception()
        self.queue.put_nowait(("done", job))

    def _put(self, kind: str, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, item))

    # --- in the decoding thread
    def choose(self, info: VideoInfo) -> list[list[int]]:
        if info.duration_s > self.max_duration_s:
            raise VideoLimitError(
                "duration in seconds", "max_timeline_duration_s", info.duration_s, self.max_duration_s
            )
        self.windows = plan_windows(
            info.frames, info.fps, info.duration_s, self.graph.frames, self.window_s, self.stride_s
        )
        if len(self.windows) > self.max_windows:
            raise VideoLimitError(
                f"windows of {self.window_s:g} s every {self.stride_s:g} s",
                "max_timeline_windows",
                len(self.windows),
                self.max_windows,
            )
        self._put("info", info)
        return [w.indices for w in self.windows]

    def on_window(self, k: int, frames: np.ndarray, _stamps: list[float], turn: Turn) -> None:
        started = time.perf_counter()
        row = model_input([frames], self.graph.meta, 1)
        self.preprocess_s += time.perf_counter() - started
        if not self.room.acquire(blocking=False):
            turn.wait_outside(self._wait_for_room, "waiting for inference")
        self._put("window", (k, row))

    def _wait_for_room(self, timeout_s: float) -> bool:
        if self.cancelled.is_set():
            raise _Cancelled
        return self.room.acquire(timeout=timeout_s)

    def checkpoint(self, turn: Turn, stage: str) -> None:
        if self.cancelled.is_set():
            raise _Cancelled
        turn.checkpoint(stage)

    def decode(self, upload: IO[bytes], limits: VideoLimits, turn: Turn, threads: int) -> DecodedVideo:
        try:
            with turn:
                limits = replace(limits, checkpoint=lambda stage: self.checkpoint(turn, stage))
                return decode_windows(
                    upload,
                    self.choose,
                    lambda k, frames, stamps: self.on_window(k, frames, stamps, turn),
                    limits,
                    resize_short_side=self.graph.meta.resize_short_side,
                    threads=threads,
                )
        except VideoError as error:
            error.__traceback__ = None
            raise
        finally:
            give_back_memory()


class TimelineRunner:
    """One per app, sharing the classify pipeline's upload gate, admission, decoder turns and batcher."""

    def __init__(self, pipeline: ClassifyPipeline) -> None:
        self.pipeline = pipeline

    def _validate(self, options: TimelineOptions) -> tuple[Graph, int]:
        p = self.pipeline
        p.check_ready()
        graph = p.engine.resolve(options.model, options.version, options.frames, options.precision)
        classes = graph.meta.num_classes
        top_k = min(5, classes) if options.top_k is None else options.top_k
        if not 1 <= top_k <= classes:
            raise InvalidOptionError(f"top_k must be between 1 and {classes} for model {graph.name!r}")
        for name, value in (("window_s", options.window_s), ("stride_s", options.stride_s)):
            if value is not None and not (math.isfinite(value) and value >= MIN_WINDOW_S):
                raise InvalidOptionError(f"{name} must be at least {MIN_WINDOW_S} s, not {value}")
        if options.smooth < 1 or options.smooth % 2 == 0:
            raise InvalidOptionError(f"smooth must be an odd number of windows, not {options.smooth}")
        return graph, top_k

    def _result(self, job: asyncio.Future[DecodedVideo]) -> DecodedVideo:
        try:
            decoded = job.result()
        except VideoError as error:
            self.pipeline.metrics.decode_failures.labels(type(error).__name__).inc()
            raise
        for warning in decoded.warnings:
            self.pipeline.metrics.decode_warnings.labels(warning.kind).inc()
        return decoded

    @staticmethod
    async def _row_batches(
        work: _Work, next_item: Callable[[], Awaitable[tuple[str, Any]]]
    ) -> AsyncIterator[list[tuple[int, np.ndarray]]]:
        """The decoded windows' rows, as many per batch as are waiting (up to max_batch_size), until
        the decoding thread ends (its future is the queue's last item: ``work.finished``)."""
        while work.finished is None:
            rows: list[tuple[int, np.ndarray]] = []
            kind, item = await next_item()
            while True:
                if kind == "done":
                    work.finished = item
                    break
                rows.append(item)
                if len(rows) >= work.batch or work.queue.empty():
                    break
                kind, item = work.queue.get_nowait()
            if rows:
                yield rows

    @staticmethod
    def _window_event(
        work: _Work, k: int, probs: np.ndarray, outputs: dict[str, np.ndarray], row: int, top_k: int
    ) -> dict[str, Any]:
        window, graph = work.windows[k], work.graph
        weights = outputs.get(DEPENDENCY_WEIGHTS)
        return {
            "window": k,
            "start_s": window.start_s,
            "end_s": window.end_s,
            "predictions": top_predictions(probs[None], graph.meta.labels, top_k),
            "dependency_weights": stage_weights(None if weights is None else weights[row], graph),
        }

    async def events(
        self, request: Request, options: TimelineOptions
    ) -> AsyncIterator[dict[str, Any] | None]:
        """``None`` once the request is accepted (see the module docstring), then the events."""
        started = time.perf_counter()
        p = self.pipeline
        graph, top_k = self._validate(options)
        timeout_s = p.settings.timeline_timeout_s
        upload = await p.uploads.receive(request)
        upload_ms = (time.perf_counter() - started) * 1000.0
        deadline = time.monotonic() + timeout_s
        work = _Work(self, graph, options)
        job: asyncio.Future[DecodedVideo] | None = None
        async with AsyncExitStack() as stack:
            stack.callback(
                lambda: upload.close_after(job) if job is not None and not job.done() else upload.close()
            )
            stack.callback(work.cancelled.set)
            await stack.enter_async_context(p.admitted())
            turn = Turn(p.turns, timeout_s, timeout_s)
            limits = replace(p.limits, timeout_s=timeout_s)
            job = asyncio.get_running_loop().run_in_executor(
                p.decode_pool, work.decode, upload.file, limits, turn, p.decode_threads
            )
            job.add_done_callback(work.finish)

            async def next_item() -> tuple[str, Any]:
                try:
                    return await asyncio.wait_for(work.queue.get(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise DecodeTimeoutError(
                        f"the timeline took longer than {timeout_s:g} s (setting timeline_timeout_s)"
                    ) from None

            kind, item = await next_item()
            if kind == "done":  # failed before the windows were planned
                self._result(item)
                raise VideoError("decoding ended before the video was probed")
            yield None
            decode_started = time.perf_counter()
            probs: list[np.ndarray] = []
            queue_ms = inference_ms = 0.0
            async for rows in self._row_batches(work, next_item):
                result = await p.run(graph, np.concatenate([r for _, r in rows]))
                queue_ms += result.queue_ms
                inference_ms += result.inference_ms
                for _ in rows:
                    work.room.release()
                for j, (k, _row) in enumerate(rows):
                    probs.append(np.asarray(result.outputs[PROBS][j], dtype=np.float64))
                    yield self._window_event(work, k, probs[-1], result.outputs, j, top_k)
            assert work.finished is not None
            decoded = self._result(work.finished)
            if len(probs) != len(work.windows):
                raise VideoError("the decoding ended before every window was decoded")
        timings = {
            "upload": upload_ms,
            "decode_and_inference": (time.perf_counter() - decode_started) * 1000.0,
            "preprocess": work.preprocess_s * 1000.0,
            "queue": queue_ms,
            "inference": inference_ms,
            "total": (time.perf_counter() - started) * 1000.0,
        }
        duration = decoded.info.duration_s
        found = segments(
            np.stack(probs), work.windows, duration, smooth=options.smooth, min_score=options.min_score
        )
        yield {
            "model": {
                "name": graph.name,
                "version": graph.version,
                "frames": graph.frames,
                "precision": graph.precision,
                "provider": graph.provider,
            },
            "window_s": work.window_s,
            "stride_s": work.stride_s,
            "num_windows": len(work.windows),
            "segments": [
                {
                    "label": graph.meta.labels[s.label],
                    "index": s.label,
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "confidence": round(s.confidence, 6),
                    "windows": [s.first_window, s.last_window],
                }
                for s in found
            ],
            "video": video_summary(decoded.info),
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
            "warnings": [{"kind": w.kind, "message": w.message} for w in decoded.warnings],
        }
