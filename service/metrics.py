"""Prometheus metrics, in a registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sda_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "sda_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_latency = Histogram(
            "sda_stage_duration_seconds",
            "Latency of each classify stage (decode, preprocess, queue, inference, total)",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_rows = Histogram(
            "sda_batch_rows",
            "Rows (clips x crops) per inference run",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "sda_batch_requests",
            "Requests sharing one inference run",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "sda_requests_in_flight", "Classify requests admitted and not finished", registry=r
        )
        self.queue_depth = Gauge(
            "sda_inference_queue_depth", "Requests waiting for an inference run", ["model"], registry=r
        )
        self.rejected = Counter(
            "sda_requests_rejected", "Classify requests refused with 503 (queue full / not ready)", registry=r
        )
        self.decode_failures = Counter(
            "sda_decode_failures", "Uploads that could not be decoded, by error", ["error"], registry=r
        )
        self.decode_warnings = Counter(
            "sda_decode_warnings",
            "Decode warnings in classify responses, by kind (frames_substituted, truncated, decode_order)",
            ["kind"],
            registry=r,
        )
        self.provider_fallback = Gauge(
            "sda_provider_fallback",
            "1 when a graph runs on a different execution provider than the first one asked for",
            ["model", "provider"],
            registry=r,
        )
