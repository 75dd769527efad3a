"""A short bounded load test (tests/load.py) against a server with a small queue: only 200s and
503s with Retry-After come back, in flight never exceeds max_queue, the server is healthy and idle
afterwards. No timing asserts; the latencies are printed. The report-sized run is
``python -m tests.load --clients 64 --seconds 60``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import load
from clips import encode_clip

from service.testing import start_server

MAX_QUEUE = 4


def test_overload_is_refused_with_503_and_the_queue_stays_bounded(tsn_only_repo: Path, tmp_path: Path):
    clip = encode_clip(tmp_path / "clip.mp4", width=160, height=120, frames=24).read_bytes()
    server = start_server(tsn_only_repo, tmp_path / "server.log", max_queue=MAX_QUEUE)
    try:
        report = asyncio.run(load.run_load(server.url, clip, clients=24, seconds=8.0))
        print(report.summary())
        health = httpx.get(f"{server.url}/health", timeout=10).json()
    finally:
        server.stop()
    assert not report.errors, report.errors[:5]
    assert set(report.statuses) == {200, 503}, report.statuses
    assert report.missing_retry_after == 0
    assert report.max_queue == MAX_QUEUE and report.max_in_flight <= MAX_QUEUE
    assert health["status"] == "ok" and health["in_flight"] == 0
