"""Metrics that show where time goes: a fitting histogram per stage, process metrics, static files
labelled as such, ``promtool check metrics`` clean; Retry-After from the measured drain rate."""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from attack import black_h264
from clips import encode_clip
from conftest import SIZE

from service.retry import MAX_RETRY_AFTER_S, DrainRate
from service.testing import start_server


def test_metrics_have_a_histogram_per_stage_and_pass_promtool(server, tmp_path):
    clip = encode_clip(tmp_path / "clip.mp4", frames=16).read_bytes()
    with server.client() as client:
        assert (
            client.post("/classify", content=clip, headers={"content-type": "video/mp4"}).status_code == 200
        )
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/nope.js").status_code == 404
        data = httpclient.InferInput("frames", [1, 8, SIZE, SIZE, 3], "UINT8")
        data.set_data_from_numpy(np.zeros((1, 8, SIZE, SIZE, 3), np.uint8))
        httpclient.InferenceServerClient(server.url.removeprefix("http://")).infer("tiny-tsn", [data])
        text = client.get("/metrics").text
    for stage in ("upload", "decode_wait", "decode", "preprocess", "queue", "inference", "total"):
        assert f"sda_stage_{stage}_seconds_count " in text, stage
    assert 'sda_stage_queue_seconds_bucket{le="0.0005"}' in text
    assert 'sda_stage_total_seconds_bucket{le="120.0"}' in text
    assert 'sda_stage_duration_seconds_count{stage="decode_wait"}' in text  # the common one stays
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert 'sda_http_requests_total{method="GET",route="static",status="200"}' in text
    assert 'sda_http_requests_total{method="GET",route="static",status="404"}' in text
    assert 'route="/v2/models/{name}/infer",status="200"' in text

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (make test installs it)"
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_drain_rate_bounds():
    drain = DrainRate(window_s=30.0)
    assert drain.retry_after_s(16) == MAX_RETRY_AFTER_S  # nothing finished: the bound
    for _ in range(20):
        drain.finished()
    assert 1 <= drain.retry_after_s(16) <= 30
    assert drain.retry_after_s(0) == 1


def test_retry_after_follows_the_measured_drain_rate(tsn_only_repo, tmp_path):
    clip = encode_clip(tmp_path / "clip.mp4", frames=16).read_bytes()
    server = start_server(tsn_only_repo, tmp_path / "server.log", max_queue=1)

    # Holds the only slot while it decodes (about a second): a slow upload would hold none.
    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 600)

    def held() -> int:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            return client.post(
                "/classify", content=long_decode, headers={"content-type": "video/mp4"}
            ).status_code

    def refused() -> httpx.Response:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(held)
            deadline = time.monotonic() + 20
            while httpx.get(f"{server.url}/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            response = httpx.post(
                f"{server.url}/classify", content=clip, headers={"content-type": "video/mp4"}
            )
            assert future.result(60) == 200
        return response

    try:
        first = refused()  # no request has finished yet: the bound
        assert first.status_code == 503 and first.headers["retry-after"] == str(MAX_RETRY_AFTER_S)
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            for _ in range(12):  # fast requests: the service drains several per second
                assert (
                    client.post("/classify", content=clip, headers={"content-type": "video/mp4"}).status_code
                    == 200
                )
        second = refused()
        assert second.status_code == 503 and 1 <= int(second.headers["retry-after"]) < MAX_RETRY_AFTER_S
        assert f"retry after {second.headers['retry-after']} s" in second.json()["detail"]
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/v2/models/tiny-tsn/infer"])
def test_oip_overload_is_503_with_error_body(tsn_only_repo, tmp_path, path):
    server = start_server(tsn_only_repo, tmp_path / "server.log", max_queue=1)

    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 600)  # holds the only slot ~1 s

    try:
        with ThreadPoolExecutor(1) as pool:
            client = httpx.Client(base_url=server.url, timeout=60.0)
            future = pool.submit(
                lambda: client.post("/classify", content=long_decode, headers={"content-type": "video/mp4"})
            )
            deadline = time.monotonic() + 20
            while httpx.get(f"{server.url}/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            body = {
                "inputs": [
                    {
                        "name": "frames",
                        "datatype": "UINT8",
                        "shape": [1, 8, SIZE, SIZE, 3],
                        "data": [0] * (8 * SIZE * SIZE * 3),
                    }
                ]
            }
            response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
            assert future.result(60).status_code == 200
        assert response.status_code == 503 and "overloaded" in response.json()["error"]
        assert response.headers["retry-after"].isdigit()
    finally:
        server.stop()
