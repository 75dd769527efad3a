"""The Python client and its CLI against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from attack import black_h264
from clips import encode_clip
from conftest import ROOT

from service.client import Client, ServiceError
from service.testing import start_server


def test_client_classify_and_errors(server, clip_dir):
    video = encode_clip(clip_dir / "client.mp4", frames=20)
    with Client(server.url) as client:
        result = client.classify(video, frames=16, clips=2, crops=3, top_k=2)
        assert len(result["predictions"]) == 2 and result["model"]["frames"] == 16
        assert len(result["sampled"]["indices"]) == 2
        assert client.health()["status"] == "ok"
        assert client.classify(video.read_bytes(), model="tiny-tsn")["model"]["name"] == "tiny-tsn"
        with pytest.raises(ServiceError) as error:
            client.classify(video, frames=7)
        assert error.value.status_code == 422 and "frames" in error.value.detail


def test_cli_prints_top_k_and_the_weight_table(server, clip_dir):
    video = encode_clip(clip_dir / "cli.mp4", frames=20)
    command = [sys.executable, "-m", "service.client", str(video), "--url", server.url]
    done = subprocess.run([*command, "--frames", "16", "--clips", "2", "--crops", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "model tiny-sda v1 (16 frames, fp32, CPUExecutionProvider)" in out
    assert "1. " in out and "3. " in out
    header = next(line for line in out.splitlines() if line.startswith("block"))
    assert header.split() == ["block", "LST", "LT", "LS", "S122"]
    rows = [line.split() for line in out.splitlines() if line.startswith("layer")]
    assert len(rows) == 16 + 4  # blocks, then stage means
    assert all(len(r) == 5 for r in rows)
    failed = subprocess.run([*command, "--frames", "7"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "HTTP 422" in failed.stderr and "frames" in failed.stderr


def test_cli_version_thumbnails_and_oip(server, clip_dir, tmp_path):
    video = encode_clip(clip_dir / "cli-oip.mp4", frames=20)
    command = [sys.executable, "-m", "service.client", str(video), "--url", server.url, "--version", "1"]
    done = subprocess.run([*command, "--thumbnails", str(tmp_path / "thumbs"), "--clips", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "thumbnails: 16 jpeg" in done.stdout and len(list((tmp_path / "thumbs").glob("*.jpg"))) == 16
    missing = subprocess.run([*command[:-1], "7"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "has no version '7'" in missing.stderr

    oip = subprocess.run(
        [*command, "--oip", "--top-k", "3", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert oip.returncode == 0, oip.stderr
    result = json.loads(oip.stdout)
    with Client(server.url) as client:
        classified = client.classify(video, top_k=3)
    assert result["model_name"] == "tiny-sda" and [p["index"] for p in result["predictions"]] == [
        p["index"] for p in classified["predictions"]
    ]
    assert all(
        abs(a["score"] - b["score"]) < 1e-5
        for a, b in zip(result["predictions"], classified["predictions"], strict=True)
    )
    assert result["dependency_weights"]["shape"] == [1, 16, 4]
    text = subprocess.run(
        [*command, "--oip", "--model", "tiny-tsn"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0 and "model tiny-tsn v1 (OIP)" in text.stdout, text.stderr


def test_client_retries_a_503_after_its_retry_after(tsn_only_repo, tmp_path):
    clip = encode_clip(tmp_path / "clip.mp4", frames=16).read_bytes()
    server = start_server(tsn_only_repo, tmp_path / "server.log", max_queue=1)

    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 600)  # holds the only slot ~1 s

    try:
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(
                lambda: httpx.post(
                    f"{server.url}/classify",
                    content=long_decode,
                    headers={"content-type": "video/mp4"},
                    timeout=60,
                )
            )
            deadline = time.monotonic() + 20
            while httpx.get(f"{server.url}/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            waits: list[float] = []

            def sleep(seconds: float) -> None:  # honour the wait, but only until the slot is free
                waits.append(seconds)
                holder.result(60)

            with Client(server.url, retries=2, sleep=sleep) as client:
                result = client.classify(clip)
            assert result["model"]["name"] == "tiny-tsn"
            assert waits == [30.0]  # nothing had finished yet: Retry-After is the bound
            with Client(server.url, retries=0) as client:
                assert client.classify(clip)["predictions"]
    finally:
        server.stop()


def test_timeline_client_and_cli(server, clip_dir):
    video = encode_clip(clip_dir / "client-timeline.mp4", frames=48, fps=12)  # 4 s
    with Client(server.url) as client:
        events = list(client.timeline(video, window_s=1.0, frames=8))
        assert [e["window"] for e in events[:-1]] == list(range(7)) and events[-1]["num_windows"] == 7
        with pytest.raises(ServiceError) as error:
            list(client.timeline(video, window_s=0.1))
        assert error.value.status_code == 422 and "window_s" in error.value.detail
    command = [sys.executable, "-m", "service.client", "timeline", str(video), "--url", server.url]
    done = subprocess.run([*command, "--window-s", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "7 windows of 1 s every 0.5 s" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert rows and rows[0][0] == "0.00" and rows[-1][1] == "4.00"
    streamed = subprocess.run([*command, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert len(lines) == lines[-1]["num_windows"] + 1 and "segments" in lines[-1]
