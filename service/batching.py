"""Dynamic batching: concurrent requests for one graph share ONNX Runtime runs.

Each graph gets one worker thread. Requests put their clips (rows of the graph input) on the
graph's queue from the event loop and await a future; the worker takes the first waiting request,
keeps collecting more for up to ``max_wait_s`` (not at all when ``expect_more()`` says no other request
is in flight) or until ``max_batch_size`` rows are gathered, runs
the session once (ONNX Runtime releases the GIL, so the event loop and the decoders keep going) and
hands every request its own rows back. A request with more rows than ``max_batch_size`` runs alone,
in chunks of ``max_batch_size``. The queue itself holds at most the requests admitted upstream
(see ``Engine.try_admit``), so memory does not grow with load.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("sda_serve.batching")

RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    outputs: dict[str, np.ndarray]  # this request's rows of every output
    queue_ms: float  # from submit until its batch started running
    inference_ms: float  # wall time of the run(s) that computed it
    batch_rows: int  # rows in the batch it ran in


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop
    enqueued: float

    @property
    def rows(self) -> int:
        return int(self.array.shape[0])


def _resolve(
    future: asyncio.Future[BatchResult], result: BatchResult | None, error: BaseException | None
) -> None:
    if future.done():  # the request went away (client disconnected, cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[int, int, float], None] | None = None,
        expect_more: Callable[[], bool] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_s)
        self._on_batch = on_batch  # (requests, rows, inference_ms)
        # Whether other requests are on their way (decoding): if not, waiting for them only adds latency.
        self._expect_more = expect_more or (lambda: True)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._carry: _Item | None = None
        self._thread = threading.Thread(target=self._worker, name=f"infer-{name}", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)
            self._started = False

    async def submit(self, array: np.ndarray) -> BatchResult:
        if not self._started:
            raise RuntimeError(f"batcher {self.name} is not running")
        if array.ndim < 1 or array.shape[0] < 1:
            raise ValueError("submit needs at least one row")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchResult] = loop.create_future()
        self._queue.put_nowait(_Item(array, future, loop, time.perf_counter()))
        return await future

    # --- worker thread ---------------------------------------------------------------------------
    def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def _worker(self) -> None:
        stopping = False
        while not stopping:
            first = self._next(None)
            if first is None:
                break
            if first.future.done():  # cancelled while waiting: skip the work
                continue
            batch, rows = [first], first.rows
            wait_s = self.max_wait_s if self._expect_more() else 0.0
            deadline = time.perf_counter() + wait_s
            while rows < self.max_batch_size:
                try:
                    item = self._next(deadline - time.perf_counter())
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                if item.future.done():
                    continue
                if rows + item.rows > self.max_batch_size:
                    self._carry = item
                    break
                batch.append(item)
                rows += item.rows
            self._execute(batch, rows)
        # Fail whatever is left so no request waits forever.
        leftovers = [self._carry] if self._carry else []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        for item in leftovers:
            item.loop.call_soon_threadsafe(_resolve, item.future, None, RuntimeError("server shutting down"))

    def _execute(self, batch: list[_Item], rows: int) -> None:
        started = time.perf_counter()
        try:
            inputs = batch[0].array if len(batch) == 1 else np.concatenate([i.array for i in batch], axis=0)
            chunks = [
                self._run(inputs[start : start + self.max_batch_size])
                for start in range(0, rows, self.max_batch_size)
            ]
            outputs = {
                key: chunks[0][key] if len(chunks) == 1 else np.concatenate([c[key] for c in chunks], axis=0)
                for key in chunks[0]
            }
        except BaseException as error:
            log.exception("inference failed on %s (batch of %d rows)", self.name, rows)
            for item in batch:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, error)
            return
        inference_ms = (time.perf_counter() - started) * 1000.0
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), rows, inference_ms)
            except Exception:
                log.exception("batch metrics callback failed")
        offset = 0
        for item in batch:
            mine = {key: value[offset : offset + item.rows] for key, value in outputs.items()}
            offset += item.rows
            result = BatchResult(mine, (started - item.enqueued) * 1000.0, inference_ms, rows)
            item.loop.call_soon_threadsafe(_resolve, item.future, result, None)
