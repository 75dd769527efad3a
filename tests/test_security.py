"""Security: the upload limit holds on disk while streaming, temporary files are always removed,
model= and version= never reach the filesystem, CORS is off unless configured. The disk and socket
checks run against a real process (``python -m service``); the name checks in-process (``app``)."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from clips import random_bytes

from service.testing import InProcessServer, start_server

LIMIT = 8 * 1024 * 1024  # above the 4 MiB spool threshold: uploads this large go to disk
CHUNK_SLACK = 1024 * 1024  # "limit + a chunk": the ASGI server hands over at most 64 KiB at a time


@pytest.fixture(scope="module")
def tmp_server(tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server whose temporary directory is its own, so the test can watch what lands there."""
    tmpdir = tmp_path_factory.mktemp("server-tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmpdir))
        server = start_server(
            tsn_only_repo, tmp_path_factory.mktemp("security") / "server.log", max_upload_bytes=LIMIT
        )
    yield server, tmpdir, disk_usage(tmpdir)  # what start-up left there (a library's session file)
    server.stop()


def disk_usage(directory: Path) -> tuple[int, int]:
    """(files, bytes) under ``directory``. The spool file is unlinked as soon as it is created, so
    the tests also count what the server holds open there (``open_temp_bytes``)."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def open_temp_bytes(pid: int, directory: Path) -> int:
    """Bytes in files under ``directory`` that process ``pid`` holds open (deleted or not)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            total += os.stat(fd).st_size
    return total


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_large_uploads_leave_no_temporary_file(tmp_server):
    server, tmpdir, baseline = tmp_server
    body = random_bytes(6 * 1024 * 1024)  # spooled to disk, then refused as not a video
    with server.client() as client:
        raw = client.post("/classify", content=body, headers={"content-type": "video/mp4"})
        form = client.post("/classify", files={"file": ("x.mp4", body, "video/mp4")})
        too_big = client.post(
            "/classify", content=random_bytes(LIMIT + 1), headers={"content-type": "video/mp4"}
        )
    assert raw.status_code == 415 and form.status_code == 415 and too_big.status_code == 413
    assert wait_until(lambda: open_temp_bytes(server.process.pid, tmpdir) == 0)
    assert disk_usage(tmpdir) == baseline


def test_streamed_upload_holds_at_most_limit_plus_a_chunk_then_nothing(tmp_server):
    """A chunked upload with no Content-Length pauses just below the limit: the server holds it on
    disk (within limit + a chunk); past the limit it answers 413 and the file is gone."""
    server, tmpdir, baseline = tmp_server
    url = urlparse(server.url)
    chunk = b"\x01" * 65536
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: video/mp4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        while sent + len(chunk) <= LIMIT:
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
        assert wait_until(lambda: open_temp_bytes(server.process.pid, tmpdir) >= sent - 2 * len(chunk))
        held = open_temp_bytes(server.process.pid, tmpdir)
        assert held <= LIMIT + CHUNK_SLACK
        for _ in range(4):  # past the limit
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert wait_until(lambda: open_temp_bytes(server.process.pid, tmpdir) == 0)
    assert disk_usage(tmpdir) == baseline


def test_client_disconnecting_mid_upload_leaves_nothing(tmp_server):
    server, tmpdir, baseline = tmp_server
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: video/mp4\r\n"
            + f"Content-Length: {LIMIT}\r\n\r\n".encode()
            + b"\x02" * (5 * 1024 * 1024)
        )
        assert wait_until(lambda: open_temp_bytes(server.process.pid, tmpdir) > 4 * 1024 * 1024)
    # closed with 3 MiB still owed
    assert wait_until(lambda: open_temp_bytes(server.process.pid, tmpdir) == 0)
    assert disk_usage(tmpdir) == baseline
    with server.client() as client:
        assert client.get("/health").json()["in_flight"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"model": "../tiny-tsn"},
        {"model": "tiny-tsn/../tiny-tsn"},
        {"model": "/etc/passwd"},
        {"model": "..%2F..%2Fetc"},
        {"model": "tiny-tsn", "version": "../1"},
        {"model": "tiny-tsn", "version": "1/../1"},
        {"model": "tiny-tsn", "version": "/"},
        {"model": "tiny-tsn\x00"},
    ],
)
def test_model_and_version_are_names_not_paths(app: InProcessServer, params):
    with app.client() as client:
        response = client.post("/classify", params=params, files={"file": ("a.mp4", b"x", "video/mp4")})
    assert response.status_code == 404, response.text
    assert "unknown model" in response.json()["detail"] or "has no version" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/v2/models/..%2Ftiny-tsn", "/v2/models/tiny-tsn/versions/..%2F1"])
def test_v2_model_paths_are_names_not_paths(app: InProcessServer, path):
    with app.client() as client:
        assert client.get(path).status_code == 404


def test_cors_is_off_unless_configured(app: InProcessServer):
    with app.client() as client:
        preflight = client.options(
            "/classify", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
        )
        simple = client.get("/health", headers={"Origin": "http://app.example"})
    assert not any(h.startswith("access-control-") for h in preflight.headers)
    assert not any(h.startswith("access-control-") for h in simple.headers)


def test_health_is_served_while_uploads_stream(tmp_server):
    """Slow uploads in flight do not block the event loop for others."""
    server, _, _ = tmp_server

    def slow_body():
        yield b"\0" * 1000
        time.sleep(2.0)
        yield b"\0" * 1000

    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(
                httpx.post,
                f"{server.url}/classify",
                content=slow_body(),
                headers={"content-type": "video/mp4"},
            )
            for _ in range(4)
        ]
        time.sleep(0.5)
        started = time.perf_counter()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        answered_in = time.perf_counter() - started
        assert all(f.result().status_code == 415 for f in futures)
    print(f"/health answered in {answered_in * 1000:.0f} ms while 4 uploads were stalled")
