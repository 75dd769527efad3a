"""Decode warnings reach the /classify response and the Prometheus counter (in-process app, the
embedded model's real ONNX graph on ONNX Runtime's CPU provider, clips encoded by the test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from clips import encode_clip
from fastapi.testclient import TestClient
from remux import damage_packet, trim_mp4

from service.app import create_app
from service.client import format_result
from service.core.config import Settings
from service.upload import FILE_FIELD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client():
    settings = Settings(models_dir=ROOT / "models", providers=["CPUExecutionProvider"], intra_op_threads=1)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def classify(client: TestClient, path: Path) -> dict:
    response = client.post("/classify", files={FILE_FIELD: (path.name, path.read_bytes(), "video/mp4")})
    assert response.status_code == 200, response.text
    return response.json()


def warning_count(client: TestClient, kind: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'sda_decode_warnings_total{{kind="{kind}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_clean_clip_has_an_empty_warnings_list(client, tmp_path):
    body = classify(client, encode_clip(tmp_path / "clean.mp4", width=128, height=96))
    assert body["warnings"] == []


def test_substituted_frames_are_in_the_response_and_counted(client, tmp_path):
    src = encode_clip(tmp_path / "p.mkv", frames=24, width=128, height=96, options={"g": "12", "bf": "0"})
    sampled = classify(client, src)["sampled"]["indices"][0]
    frame = next(i for i in sampled if i % 12)  # a sampled frame that is not a keyframe
    before = warning_count(client, "frames_substituted")
    body = classify(client, damage_packet(src, tmp_path / "damaged.mkv", frame))  # P-only: packet = frame
    assert body["sampled"]["indices"][0] == sampled
    [warning] = body["warnings"]
    assert warning["kind"] == "frames_substituted" and f"[{frame}]" in warning["message"]
    assert warning_count(client, "frames_substituted") == before + 1
    text = format_result(body)  # the command-line client shows it too
    assert f"warning: {warning['message']}" in text and "fp32" in text.splitlines()[0]


def test_a_trimmed_mp4_classifies_without_warnings(client, tmp_path):
    src = encode_clip(tmp_path / "src.mp4", frames=48, width=128, height=96, options={"g": "12"})
    body = classify(client, trim_mp4(src, tmp_path / "trimmed.mp4", 17))
    assert body["video"]["frames"] == 31
    assert body["warnings"] == []
