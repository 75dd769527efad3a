"""A second real server with tiny limits: upload size (413 while streaming), overload (503 +
Retry-After), API key (401) and CORS."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from attack import black_h264
from clips import encode_clip
from conftest import Server, start_server

LIMIT = 40_000
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def limited(tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(
        tsn_only_repo,
        tmp_path_factory.mktemp("limited") / "server.log",
        max_upload_bytes=LIMIT,
        max_queue=1,
        api_key=KEY,
        cors_origins="http://app.example",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_clip(clip_dir: Path) -> Path:
    path = encode_clip(clip_dir / "small.mp4", frames=12)
    assert path.stat().st_size < LIMIT
    return path


def post(server: Server, path: Path, headers=AUTH, **params) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60.0) as client, path.open("rb") as f:
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
        with httpx.Client(base_url=limited.url, timeout=60.0) as client:
            response = client.post("/classify", content=big.read_bytes(), headers={**AUTH, **headers})
        assert response.status_code == 413, response.text
        assert f"{LIMIT}" in response.json()["detail"]
    response = post(limited, big)
    assert response.status_code == 413 and "too large" in response.json()["detail"]


def test_streamed_upload_is_cut_off_while_reading(limited):
    """A chunked body with no Content-Length: the 413 comes back before the body is even finished."""
    url = urlparse(limited.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: video/mp4\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"\0" * 8192
        for _ in range(LIMIT // len(chunk) + 2):  # just past the limit; the final 0-chunk is never sent
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.settimeout(30)
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


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
        with httpx.Client(base_url=limited.url, timeout=60.0) as client:
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
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=limited.url, timeout=30.0) as client:
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
    with httpx.Client(base_url=limited.url, timeout=30.0) as client:
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
    with httpx.Client(base_url=limited.url, timeout=30.0) as client:
        assert client.get("/models").status_code == 401
        assert client.get("/models", headers=AUTH).status_code == 200
        assert client.get("/v2/models/tiny-tsn").status_code == 401
        for probe in ("/health", "/ready", "/v2/health/live", "/v2/health/ready", "/metrics"):
            assert client.get(probe).status_code == 200, probe


def test_cors(limited):
    with httpx.Client(base_url=limited.url, timeout=30.0) as client:
        preflight = client.options(
            "/classify",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers.get("access-control-allow-origin") == "http://app.example"
        other = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
