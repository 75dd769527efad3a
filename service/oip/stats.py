"""Per-graph inference statistics in the shape of Triton's statistics extension.

Recorded by :meth:`service.pipeline.ClassifyPipeline.run` for every route (/classify and the OIP
inference routes share the batcher, so they share the numbers): ``success``/``fail`` count the
inference submissions and their queue + compute time, ``queue`` the wait in the dynamic batcher,
``compute_infer`` the ONNX Runtime run, ``inference_count`` the rows (clips x crops, or tensor
batch rows). ``execution_count`` (the batcher's runs) comes from the batch metrics.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

GraphKey = tuple[str, str, int]  # (name, version, frames)
STAGES = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


@dataclass
class _Stats:
    counts: dict[str, list[int]] = field(default_factory=lambda: {s: [0, 0] for s in STAGES})
    inference_count: int = 0
    last_inference_ms: int = 0

    def add(self, stage: str, ns: int) -> None:
        self.counts[stage][0] += 1
        self.counts[stage][1] += ns


class InferenceStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graphs: dict[GraphKey, _Stats] = {}

    def _of(self, key: GraphKey) -> _Stats:
        return self._graphs.setdefault(key, _Stats())

    def success(self, key: GraphKey, rows: int, input_ms: float, queue_ms: float, infer_ms: float) -> None:
        with self._lock:
            stats = self._of(key)
            stats.add("success", int((input_ms + queue_ms + infer_ms) * 1e6))
            stats.add("compute_input", int(input_ms * 1e6))
            stats.add("queue", int(queue_ms * 1e6))
            stats.add("compute_infer", int(infer_ms * 1e6))
            stats.add("compute_output", 0)
            stats.inference_count += rows
            stats.last_inference_ms = int(time.time() * 1000)

    def failure(self, key: GraphKey, elapsed_ms: float) -> None:
        with self._lock:
            self._of(key).add("fail", int(elapsed_ms * 1e6))

    def entry(self, keys: list[GraphKey], name: str, version: str, execution_count: int) -> dict[str, Any]:
        """Triton's statistics of one model (the sum over ``keys``' graphs)."""
        with self._lock:
            merged = _Stats()
            for key in keys:
                stats = self._graphs.get(key)
                if stats is None:
                    continue
                for stage, (count, ns) in stats.counts.items():
                    merged.counts[stage][0] += count
                    merged.counts[stage][1] += ns
                merged.inference_count += stats.inference_count
                merged.last_inference_ms = max(merged.last_inference_ms, stats.last_inference_ms)
        return {
            "name": name,
            "version": version,
            "last_inference": merged.last_inference_ms,
            "inference_count": merged.inference_count,
            "execution_count": execution_count,
            "inference_stats": {s: {"count": c, "ns": ns} for s, (c, ns) in merged.counts.items()},
            "batch_stats": [],
        }
