"""The Python client and its CLI against the real server."""

from __future__ import annotations

import subprocess
import sys

import pytest
from clips import encode_clip
from conftest import ROOT

from service.client import Client, ServiceError


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
