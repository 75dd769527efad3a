"""Faults: a broken model repository stops the service at start with the reason and a non-zero exit;
SIGTERM with requests in flight answers every admitted request and exits cleanly; a failing
inference batch fails only its own requests."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from attack import black_h264
from clips import encode_clip
from onnx import TensorProto, helper

from service.batching import DynamicBatcher
from service.testing import run_to_exit, start_server


def wrong_signature_graph(like: Path, target: Path) -> None:
    """A valid ONNX graph carrying the real graph's metadata but a float (N, 3) input."""
    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("Softmax", ["frames"], ["probs"])], "wrong", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    for prop in onnx.load(str(like), load_external_data=False).metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(target))


@pytest.mark.parametrize("fault", ["missing", "empty", "corrupt", "truncated", "wrong-signature"])
def test_broken_repository_exits_non_zero_with_the_reason(fault, tsn_only_repo: Path, tmp_path: Path):
    repo = tmp_path / "models"
    graph = repo / "tiny-tsn" / "1" / "model-8f.onnx"
    real = tsn_only_repo / "tiny-tsn" / "1" / "model-8f.onnx"
    expected = {
        "missing": "does not exist",
        "empty": "no graphs found",
        "corrupt": "cannot load",
        "truncated": "cannot load",
        "wrong-signature": "expected one uint8 input",
    }[fault]
    if fault != "missing":
        repo.mkdir()
    if fault in ("corrupt", "truncated", "wrong-signature"):
        graph.parent.mkdir(parents=True)
    if fault == "corrupt":
        graph.write_bytes(b"this is not a protobuf" * 100)
    elif fault == "truncated":
        graph.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    elif fault == "wrong-signature":
        wrong_signature_graph(real, graph)
    result = run_to_exit(repo)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "sda-serve cannot start" in output and expected in output, output
    assert str(repo) in output  # says where


def test_sigterm_drains_answers_every_admitted_request_then_exits_cleanly(
    tsn_only_repo: Path, tmp_path: Path
):
    clip = encode_clip(tmp_path / "clip.mp4", frames=16).read_bytes()
    # admitted = body complete and decoding: one-keyframe 1080p clips, about a second each to decode
    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 600)
    server = start_server(tsn_only_repo, tmp_path / "server.log", max_queue=8)
    in_flight = 6

    def slow_body():
        yield clip[:500]
        time.sleep(2.0)  # still uploading when SIGTERM arrives: not admitted, not waited for
        yield clip[500:]

    def admitted_request() -> int:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            response = client.post("/classify", content=long_decode, headers={"content-type": "video/mp4"})
            assert response.status_code != 200 or response.json()["predictions"]
            return response.status_code

    def unfinished_upload() -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            return client.post("/classify", content=slow_body(), headers={"content-type": "video/mp4"})

    try:
        with (
            ThreadPoolExecutor(in_flight + 2) as pool,
            httpx.Client(base_url=server.url, timeout=10) as probe,
        ):
            futures = [pool.submit(admitted_request) for _ in range(in_flight)]
            uploads = [pool.submit(unfinished_upload) for _ in range(2)]
            deadline = time.monotonic() + 20
            while probe.get("/health").json()["in_flight"] < in_flight and time.monotonic() < deadline:
                time.sleep(0.02)
            assert probe.get("/health").json()["in_flight"] == in_flight
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # draining: the socket stays open, new requests and readiness get 503 + Retry-After
            late = httpx.post(f"{server.url}/classify", content=clip, headers={"content-type": "video/mp4"})
            assert late.status_code == 503 and "shutting down" in late.json()["detail"], late.text
            assert int(late.headers["retry-after"]) > 0
            ready = httpx.get(f"{server.url}/ready")
            assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
            # every readiness and model route says "not ready"; liveness and /health stay up
            for path in ("/v2/health/ready", "/models", "/v2/models/tiny-tsn", "/v2/models/tiny-tsn/ready"):
                assert httpx.get(f"{server.url}{path}").status_code == 503, path
            assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
            assert httpx.get(f"{server.url}/health").json()["ready"] is False
            statuses = [f.result(timeout=60) for f in futures]
            unfinished = [f.result(timeout=10) for f in uploads]
        assert statuses == [200] * in_flight, server.log()
        assert all(u.status_code == 503 and "shutting down" in u.json()["detail"] for u in unfinished)
        assert server.process.wait(30) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tsn_session(tsn_only_repo: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    path = tsn_only_repo / "tiny-tsn" / "1" / "model-8f.onnx"
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_a_failing_batch_fails_only_its_own_requests(tsn_session: ort.InferenceSession):
    """One request per batch; the middle one has a shape the graph refuses (ONNX Runtime raises)."""
    input_name = tsn_session.get_inputs()[0].name
    _, frames, size, _, channels = tsn_session.get_inputs()[0].shape

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"probs": tsn_session.run(["probs"], {input_name: batch})[0]}

    good = np.zeros((1, frames, size, size, channels), np.uint8)
    bad = np.zeros((1, frames, size // 2, size, channels), np.uint8)
    batcher = DynamicBatcher("tiny-tsn", run, max_batch_size=1, max_wait_s=0.01)
    batcher.start()

    async def submit_all():
        return await asyncio.gather(*(batcher.submit(a) for a in (good, bad, good)), return_exceptions=True)

    try:
        first, failed, last = asyncio.run(submit_all())
        again = asyncio.run(batcher.submit(good))
    finally:
        batcher.stop()
    assert isinstance(failed, Exception)
    assert "dimension" in str(failed).lower() or "shape" in str(failed).lower(), failed
    for result in (first, last, again):
        assert not isinstance(result, BaseException), result
        assert result.outputs["probs"].shape == (1, 3)
        np.testing.assert_allclose(result.outputs["probs"].sum(), 1.0, rtol=1e-5)
    assert not any(t.name == "infer-tiny-tsn" for t in threading.enumerate())
