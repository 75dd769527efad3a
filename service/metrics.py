"""Prometheus metrics, in a registry per app (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Buckets that fit each stage: milliseconds for the short ones, up to 120 s for whole requests, with
# steps close enough that a quantile interpolated inside one bucket is off by at most ~25 %.
FAST_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
WORK_BUCKETS_S = (
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0,
    12.5, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip
TOTAL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0, 12.5, 15.0,
    20.0, 25.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
STAGE_BUCKETS_S = {
    "upload": WORK_BUCKETS_S,
    "decode_wait": FAST_BUCKETS_S,
    "decode": WORK_BUCKETS_S,
    "preprocess": FAST_BUCKETS_S,
    "queue": FAST_BUCKETS_S,
    "inference": WORK_BUCKETS_S,
    "total": TOTAL_BUCKETS_S,
}
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
            buckets=TOTAL_BUCKETS_S,
            registry=r,
        )
        self.stage_latency = Histogram(
            "sda_stage_duration_seconds",
            "Latency of each classify stage (coarse common buckets; sda_stage_<stage>_seconds fit each)",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stages = {
            stage: Histogram(
                f"sda_stage_{stage}_seconds",
                f"Latency of the {stage.replace('_', ' ')} stage of /classify and OIP inference requests",
                buckets=buckets,
                registry=r,
            )
            for stage, buckets in STAGE_BUCKETS_S.items()
        }
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
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
        self.static_requests = Counter(
            "sda_static_requests",
            "Requests for the web page's static files, by status",
            ["status"],
            registry=r,
        )
        self.grpc_requests = Counter(
            "sda_grpc_requests", "OIP gRPC requests by method and status code", ["method", "code"], registry=r
        )
        self.provider_fallback = Gauge(
            "sda_provider_fallback",
            "1 when a graph runs on a different execution provider than the first one asked for",
            ["model", "provider"],
            registry=r,
        )

    def observe_stage(self, stage: str, seconds: float) -> None:
        """One stage latency, into its own histogram and the common one."""
        self.stage_latency.labels(stage).observe(seconds)
        histogram = self.stages.get(stage)
        if histogram is not None:
            histogram.observe(seconds)
