"""Repeat-and-summarise: every figure the benchmark prints is a median over repeats with min and max."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int

    def to_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {
            "median": round(self.median, digits),
            "min": round(self.min, digits),
            "max": round(self.max, digits),
            "n": self.n,
        }

    def scaled(self, factor: float) -> Summary:
        """The same figure in other units (factor > 0 keeps min/max in place)."""
        return Summary(self.median * factor, self.min * factor, self.max * factor, self.n)

    def inverse(self, numerator: float) -> Summary:
        """numerator / x: e.g. seconds per clip -> clips per second (min and max swap)."""
        return Summary(numerator / self.median, numerator / self.max, numerator / self.min, self.n)


def summarise(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarise")
    return Summary(statistics.median(values), min(values), max(values), len(values))


def time_repeats(
    fn: Callable[[], object],
    *,
    min_repeats: int = 3,
    max_repeats: int = 10,
    budget_s: float = 2.0,
    warmup: int = 1,
) -> Summary:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then at least ``min_repeats`` timed calls,
    more (up to ``max_repeats``) while the total stays within ``budget_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < budget_s):
        started = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - started
        times.append(elapsed)
        spent += elapsed
    return summarise(times)
