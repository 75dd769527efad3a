"""A second application with tiny limits, in-process: upload size (413, also while a body without
Content-Length streams in), overload (503 + Retry-After), API key (401) and CORS. The 413 on a real
socket, with the spool file watched on disk, is in test_security.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from attack import black_h264
from clips import encode_clip

from service.testing import InProcessServer, serve_in_process

LIMIT = 40_000
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def limited(tsn_only_repo: Path):
    with serve_in_process(
        tsn_only_repo, max_upload_bytes=LIMIT, max_queue=1, api_key=KEY, cors_origins="http://app.example"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def small_clip(clip_dir: Path) -> Path:
    path = encode_clip(clip_dir / "small.mp4", frames=12)
    assert path.stat().st_size < LIMIT
    return path


def post(server: InProcessServer, path: Path, headers=AUTH, **params) -> httpx.Response:
    with server.client() as client, path.open("rb") as f:
        return client.post(
            "/classify", params=params, headers=headers, files={"file": (path.name, f, "video/mp4")}
        )


def test_small_upload_is_accepted(limited, small_clip):
    response = post(limited, small_clip)
    assert response.status_code == 200, response.text
    assert response.json()["model"]["name"] == "tiny-tsn"


def test_declared_too_large_upload_is_413(limited, clip_dir):
    big = clip_dir / "big.bin"
    big.write_bytes(b"\0" * (LIMIT + 1))
    for headers in ({"content-type": "video/mp4"}, {"content-type": "application/octet-stream"}):
        with limited.client() as client:
            response = client.post("/classify", content=big.read_bytes(), headers={**AUTH, **headers})
        assert response.status_code == 413, response.text
        assert f"{LIMIT}" in response.json()["detail"]
    response = post(limited, big)
    assert response.status_code == 413 and "too large" in response.json()["detail"]


def test_streamed_upload_is_cut_off_while_reading(limited):
    """A chunked body with no Content-Length: the 413 comes back before the body is even finished."""
    answered = threading.Event()
    body_finished_first: list[bool] = []
    chunk = b"\0" * 8192

    def endless_body():
        for _ in range(LIMIT // len(chunk) + 2):  # just past the limit
            yield chunk
        # The rest is sent only after the answer; a server that waits for the whole body gets it 30 s on.
        body_finished_first.append(not answered.wait(30))
        yield chunk

    with limited.client() as client:
        response = client.post(
            "/classify", content=endless_body(), headers={**AUTH, "content-type": "video/mp4"}
        )
    answered.set()
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert True not in body_finished_first
    assert f"{LIMIT}" in response.json()["detail"]


def test_overload_gives_503_with_retry_after_and_the_server_survives(limited, small_clip, clip_dir):
    """Admission counts work, not waiting: a slow upload holds no slot (a request meanwhile is
    served); a long decode holds the only one (max_queue=1), and requests meanwhile get 503 +
    Retry-After at once."""
    data = small_clip.read_bytes()

    def slow_body():
        yield data[:1000]
        time.sleep(1.5)
        yield data[1000:]

    def slow_request() -> httpx.Response:
        with limited.client() as client:
            return client.post(
                "/classify", content=slow_body(), headers={**AUTH, "content-type": "video/mp4"}
            )

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(slow_request)
        time.sleep(0.5)
        assert post(limited, small_clip).status_code == 200
        assert slow.result().status_code == 200, slow.result().text

    bomb = clip_dir / "long-decode.mp4"  # ~25 KB, one keyframe: about a second to decode
    bomb.write_bytes(black_h264(bomb, 1920, 1080, 600))
    with ThreadPoolExecutor(1) as pool, limited.client() as client:
        busy = pool.submit(post, limited, bomb)
        deadline = time.monotonic() + 10
        while client.get("/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        rejected = [post(limited, small_clip) for _ in range(3)]
        assert busy.result().status_code == 200, busy.result().text
    for response in rejected:
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert "overloaded" in response.json()["detail"]
    with limited.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["in_flight"] == 0
        assert "sda_requests_rejected_total 3.0" in client.get("/metrics").text
    assert post(limited, small_clip).status_code == 200


def test_api_key(limited, small_clip):
    missing = post(limited, small_clip, headers={})
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = post(limited, small_clip, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong API key" in wrong.json()["detail"]
    with limited.client() as client:
        assert client.get("/models").status_code == 401
        assert client.get("/models", headers=AUTH).status_code == 200
        assert client.get("/v2/models/tiny-tsn").status_code == 401
        for probe in ("/health", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
            assert client.get(probe).status_code == 200, probe


def test_cors(limited):
    with limited.client() as client:
        preflight = client.options(
            "/classify",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers.get("access-control-allow-origin") == "http://app.example"
        other = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
