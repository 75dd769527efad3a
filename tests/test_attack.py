"""Hostile clients (issue #21), short versions of ``python -m tests.attack`` against real servers on
127.0.0.1: slow and stalled uploads, media bombs, label and multipart floods, a full spool disk, an
unreadable repository, a UTF-8 API key, what strangers can read, HEAD probes, the drain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from attack import (
    MODELS,
    black_h264,
    drain_with_uploads,
    expect_continue,
    long_boundary,
    many_streams_mkv,
    multipart_flood,
    normal_clip,
    open_upload,
    post_clip,
    read_answer,
    rss_mib,
    stream_bomb,
    wide_gif,
    wide_gif_bomb,
)
from conftest import ROOT

from service.testing import ServerProcess as Server
from service.testing import server_env, start_server

GRACE_S = 1.0
DECODE_TIMEOUT_S = 6.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("attack-media")
    return {
        "clip": normal_clip(directory),
        "gif": wide_gif(directory),
        "streams": many_streams_mkv(directory, 1000),
        "bomb": black_h264(directory / "bomb.mp4", 1920, 1080, 900),  # 33 KB, ~2 s to decode
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded model with short upload deadlines, two slots and a small decode budget."""
    server = start_server(
        MODELS,
        tmp_path_factory.mktemp("attack") / "server.log",
        max_queue=5,
        max_uploads=12,
        decode_workers=2,
        upload_grace_s=GRACE_S,
        upload_min_bytes_per_s=20_000,
        decode_budget_s=1.5,
        decode_timeout_s=DECODE_TIMEOUT_S,
    )
    FRESH_RSS[server.url] = rss_mib(server.process.pid)
    yield server
    server.stop()


FRESH_RSS: dict[str, float] = {}


def _no_500(server: Server) -> None:
    log = server.log()
    assert " 500" not in log and "Traceback" not in log, log[-3000:]


# ------------------------------------------------------------------------------ 1. slow uploads
def test_stalled_uploads_take_no_slot_and_get_408(hostile: Server, media):
    """Ten stalled bodies (twice max_queue): a normal request is answered at once; each staller gets
    408 JSON with its connection closed after the grace period."""
    socks = [open_upload(hostile.url, 1_000_000, b"\0" * 1024) for _ in range(10)]
    try:
        time.sleep(0.3)
        status, latency, _ = post_clip(hostile.url, media["clip"])
        assert status == 200 and latency < GRACE_S + 5
        started = time.perf_counter()
        answers = [read_answer(s, 15) for s in socks]
        waited = time.perf_counter() - started
    finally:
        for s in socks:
            s.close()
    assert [a[0] for a in answers] == [408] * 10
    assert all("too slow" in a[1]["detail"] for a in answers)
    assert all(a[3] for a in answers), "connections must be closed"
    assert waited < GRACE_S + 3
    with hostile.client() as client:
        assert client.get("/health").json()["in_flight"] == 0


def test_expect_100_continue_without_body_gets_408(hostile: Server):
    row = expect_continue(hostile)
    assert row.ok and row.latency_s < GRACE_S + 3, row


def test_dribbling_below_the_minimum_rate_gets_408(hostile: Server):
    sock = open_upload(hostile.url, 1_000_000, b"\0" * 100)
    try:
        started = time.perf_counter()
        for _ in range(40):  # 1 KB/s, the minimum is 20 KB/s
            time.sleep(0.1)
            try:
                sock.sendall(b"\0" * 100)
            except OSError:
                break
        status, body, headers, _ = read_answer(sock, 10)
    finally:
        sock.close()
    assert status == 408 and "upload_min_bytes_per_s" in body["detail"]
    assert headers.get("connection") == "close"
    assert time.perf_counter() - started < GRACE_S + 5


def test_too_many_uploads_in_progress_is_503_with_retry_after(hostile: Server):
    socks = [open_upload(hostile.url, 1_000_000, b"\0" * 1024) for _ in range(12)]  # max_uploads
    try:
        time.sleep(0.3)
        extra = open_upload(hostile.url, 100, b"\0" * 100)
        status, body, headers, _ = read_answer(extra, 10)
        extra.close()
    finally:
        for s in socks:
            s.close()
    assert status == 503 and headers.get("retry-after") == "1" and "uploads" in body["detail"]


# ------------------------------------------------------------------------------ 2. media bombs
def test_wide_gif_is_refused_before_any_large_frame(hostile: Server, media):
    row = wide_gif_bomb(hostile, media["gif"])
    assert row.ok, row
    assert "max_aspect_ratio" in row.notes[0]
    assert row.latency_s < 3 and row.rss_peak - row.rss_before < 100, row


def test_many_streams_cost_no_memory(hostile: Server, media):
    row = stream_bomb(hostile, media["streams"], 1000)
    assert row.ok, row
    assert row.rss_peak - row.rss_before < 100, row


def test_decode_bombs_share_the_decoder(hostile: Server, media):
    """Four long decodes at once: each stops at its budget (422, within the deadline + 1 s) and a
    normal request sent behind them is answered in about its own time, not after theirs."""
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(post_clip, hostile.url, media["bomb"]) for _ in range(4)]
        time.sleep(0.5)
        status, latency, body = post_clip(hostile.url, media["clip"])
        bombs = [f.result() for f in futures]
    print(f"normal request behind 4 bombs: {latency:.2f} s; bombs {[round(b[1], 2) for b in bombs]}")
    assert status == 200 and latency < 3, (status, latency, body)
    assert all(b[0] in (200, 422) for b in bombs), bombs
    assert all(b[1] < DECODE_TIMEOUT_S + 1 for b in bombs)
    _no_500(hostile)


# ------------------------------------------------------------------------------ 4. bounded state
def test_unmatched_paths_share_one_metrics_label(hostile: Server):
    with hostile.client() as client:
        for i in range(200):
            assert client.get(f"/no-such-{i}-" + "p" * 500).status_code == 404
        started = time.perf_counter()
        metrics = client.get("/metrics")
        assert time.perf_counter() - started < 2
    assert "no-such" not in metrics.text
    assert 'route="unmatched"' in metrics.text


def test_nonstandard_methods_share_one_metrics_label():
    """uvicorn's h11 parser refuses unknown methods before the app; another server (httptools)
    passes them: the middleware must label them ``other`` whatever arrives."""
    import asyncio

    from service.app import create_app
    from service.core.config import Settings

    app = create_app(Settings(models_dir=MODELS))

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for i in range(50):
                await client.request(f"X{i}" + "M" * 1000, "/health")
            return (await client.get("/metrics")).text

    text = asyncio.run(run())
    assert 'method="other"' in text and "MMMM" not in text


def test_multipart_flood_gets_a_small_error(hostile: Server):
    row = multipart_flood(hostile, parts=2000, parallel=2)
    assert row.ok, row


def test_error_names_at_most_three_fields(hostile: Server):
    boundary = "b0"
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{"f" * 100}{i}"\r\n\r\nv\r\n'
            for i in range(10)
        )
        + f"--{boundary}--\r\n"
    )
    with hostile.client() as client:
        response = client.post(
            "/classify",
            content=body.encode(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 422 and len(response.content) <= 1024
    assert "and 7 more" in response.json()["detail"]


# ------------------------------------------------------------------------------ 5. clear errors
def test_long_boundary_is_422(hostile: Server):
    row = long_boundary(hostile)
    assert row.ok, row


@pytest.fixture(scope="module")
def small_spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose temporary directory is a 1 MiB tmpfs (needs root to mount; skipped without)."""
    mount = tmp_path_factory.mktemp("small-spool")
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TMPDIR", str(mount))
            server = start_server(MODELS, tmp_path_factory.mktemp("spool-log") / "server.log")
        yield server
        server.stop()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("form", [False, True])
def test_full_spool_disk_is_507_json(small_spool: Server, form: bool):
    body = os.urandom(6 * 1024 * 1024)  # past the 4 MiB kept in memory: spooled to the full disk
    with small_spool.client() as client:
        if form:
            response = client.post("/classify", files={"file": ("a.mp4", body, "video/mp4")})
        else:
            response = client.post("/classify", content=body, headers={"content-type": "video/mp4"})
        assert response.status_code == 507, response.text
        assert "no space" in response.json()["detail"] and response.headers["retry-after"]
        assert client.get("/health").status_code == 200
    _no_500(small_spool)


SERVICE = [sys.executable, "-m", "service", "--port", "1", "--models"]


def test_unreadable_repository_is_the_one_line_start_error(tmp_path: Path):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to take away root's right to read anything")
    repo = tmp_path / "models"
    repo.mkdir()
    repo.chmod(0)
    no_override = "-dac_override,-dac_read_search"
    result = subprocess.run(
        ["setpriv", "--bounding-set", no_override, "--inh-caps", no_override, *SERVICE, str(repo)],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert f"sda-serve cannot start: Permission denied: {repo}" in output
    assert "Traceback" not in output, output


def test_a_non_ascii_api_key_sent_as_utf8_matches(tmp_path: Path):
    key = "clé-ключ-鍵"
    server = start_server(MODELS, tmp_path / "server.log", api_key=key, protect_ops="true")
    try:
        right = {"authorization": b"Bearer " + key.encode("utf-8")}
        wrong = {"authorization": b"Bearer " + b"cle"}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/models", headers=right).status_code == 200
            assert client.get("/models", headers=wrong).status_code == 401
            # protect_ops: metrics and the API description need the key, probes do not
            for path in ("/metrics", "/openapi.json", "/docs", "/redoc"):
                assert client.get(path).status_code == 401, path
                assert client.get(path, headers=right).status_code == 200, path
            assert client.get("/health").status_code == 200
            assert client.head("/ready").status_code == 200
    finally:
        server.stop()


def test_an_api_key_that_cannot_be_sent_is_refused_at_start(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "1", "--models", str(MODELS)],
        cwd=ROOT,
        env=server_env(api_key="two words"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "api_key" in result.stderr


# ------------------------------------------------------------------------------ 6. strangers
def test_strangers_read_no_paths_versions_or_server_name(hostile: Server):
    with hostile.client() as client:
        models = client.get("/models")
        docs = client.get("/docs")
        head = client.head("/health")
    graphs = [g for m in models.json()["models"] for g in m["graphs"]]
    assert all(not g["path"].startswith("/") and g["path"].count("/") == 2 for g in graphs), graphs
    assert all("exported_with" not in m["manifest"] for m in models.json()["models"])
    assert "server" not in models.headers
    csp = docs.headers["content-security-policy"]
    assert (
        "default-src 'none'" in csp
        and "frame-ancestors 'none'" in csp
        and "'unsafe-inline'" not in csp.split("style-src")[0]
    )
    assert head.status_code == 200 and head.content == b""


def test_drain_closes_unfinished_uploads_without_500(tmp_path: Path, media):
    row, _ = drain_with_uploads(MODELS, tmp_path, media["bomb"], uploads=6)
    assert row.ok, row


def test_memory_is_given_back(hostile: Server):
    """After the bombs above the server returns near its size at rest (malloc_trim after decodes)."""
    time.sleep(1.5)
    after = rss_mib(hostile.process.pid)
    print(f"RSS fresh {FRESH_RSS[hostile.url]:.0f} MiB, after the attacks {after:.0f} MiB")
    assert after < FRESH_RSS[hostile.url] + 150
