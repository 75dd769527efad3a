"""How long an overloaded client should wait: ``Retry-After`` from the measured drain rate.

The rate is the requests that finished in the last ``window_s`` seconds; the answer is the time the
requests in flight need to drain at that rate, rounded up and bounded to 1..30 s. With no request
finished in the window (the service is stuck or every request is slower than the window) it is the
bound, 30 s.
"""

from __future__ import annotations

import math
import time
from collections import deque

MIN_RETRY_AFTER_S = 1
MAX_RETRY_AFTER_S = 30


class DrainRate:
    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._finished: deque[float] = deque()
        self._since = time.monotonic()

    def _prune(self, now: float) -> None:
        while self._finished and self._finished[0] < now - self.window_s:
            self._finished.popleft()

    def finished(self) -> None:
        now = time.monotonic()
        self._finished.append(now)
        self._prune(now)

    def per_second(self) -> float:
        now = time.monotonic()
        self._prune(now)
        span = max(1e-3, min(self.window_s, now - self._since))
        return len(self._finished) / span

    def retry_after_s(self, in_flight: int) -> int:
        rate = self.per_second()
        if rate <= 0:
            return MAX_RETRY_AFTER_S
        return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, math.ceil(in_flight / rate)))
