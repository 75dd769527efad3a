"""The Open Inference Protocol v2 against a real server, with the real clients: tritonclient (HTTP in
JSON and binary mode, gRPC) and the KServe SDK's REST client (in a subprocess: its generated
``inference`` protobuf module clashes with tritonclient's in one process). Outputs are checked
against ONNX Runtime sessions on the same graphs and against /classify on the same clip."""

from __future__ import annotations

import base64
import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from attack import black_h264
from clips import encode_clip
from conftest import LABELS, ROOT, SIZE
from tritonclient.utils import InferenceServerException

from service.testing import ServerProcess as Server
from service.testing import free_port, server_command, server_env, start_server

TOL = 1e-6


@pytest.fixture(scope="module")
def oip(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    grpc_port = free_port()
    running = start_server(
        model_repo,
        tmp_path_factory.mktemp("oip") / "server.log",
        max_batch_wait_ms=2,
        default_model="tiny-sda",
        grpc_port=grpc_port,
    )
    yield running, grpc_port
    running.stop()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = encode_clip(tmp_path_factory.mktemp("oip-clip") / "clip.mp4", width=96, height=72, frames=24)
    return Path(path).read_bytes()


def _http(server: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


def _frames(n: int, t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, SIZE, SIZE, 3), dtype=np.uint8)


def _direct(model_repo: Path, model: str, frames: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        str(model_repo / model / "1" / f"model-{frames.shape[1]}f.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"frames": frames}), strict=True))


def test_health_metadata_config_index_with_tritonclient_http(oip):
    server, _ = oip
    client = _http(server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-sda") and client.is_model_ready("tiny-sda", "1")
    assert client.is_model_ready("tiny-sda-16f", "1") and client.is_model_ready("tiny-tsn-8f")
    assert not client.is_model_ready("tiny-sda", "8") and not client.is_model_ready("nope")
    assert not client.is_model_ready("tiny-tsn-16f")  # tiny-tsn has only an 8-frame graph

    meta = client.get_server_metadata()
    assert meta["name"] == "sda-serve"
    assert {"binary_tensor_data", "classification", "model_configuration", "statistics"} <= set(
        meta["extensions"]
    )

    # One OIP model per graph: the plain name at the default frame count, <name>-<T>f for each one.
    plain, f16 = client.get_model_metadata("tiny-sda"), client.get_model_metadata("tiny-sda-16f", "1")
    assert plain["inputs"][0] == {"name": "frames", "datatype": "UINT8", "shape": [-1, 8, SIZE, SIZE, 3]}
    assert f16["inputs"][0]["shape"] == [-1, 16, SIZE, SIZE, 3] and f16["versions"] == ["1"]
    assert plain["inputs"][1] == {"name": "video", "datatype": "BYTES", "shape": [-1]}
    assert {o["name"]: o["shape"] for o in plain["outputs"]} == {
        "probs": [-1, 3],
        "logits": [-1, 3],
        "dependency_weights": [-1, 16, 4],
    }
    assert "dependency_weights" not in {o["name"] for o in client.get_model_metadata("tiny-tsn")["outputs"]}

    config = client.get_model_config("tiny-sda-16f")
    assert config["max_batch_size"] == 8 and config["platform"] == "onnxruntime_onnx"
    assert (
        config["input"][0]["dims"] == [16, SIZE, SIZE, 3] and config["input"][0]["data_type"] == "TYPE_UINT8"
    )
    assert {o["name"]: o["dims"] for o in config["output"]}["dependency_weights"] == [16, 4]

    index = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
    assert index == {
        (name, "1"): "READY"
        for name in ("tiny-sda", "tiny-sda-8f", "tiny-sda-16f", "tiny-tsn", "tiny-tsn-8f")
    }
    stats = client.get_inference_statistics("tiny-sda")["model_stats"]
    assert [s["name"] for s in stats] == ["tiny-sda"]
    # /v2/models/stats is the statistics of every model, not a model called "stats"
    assert len(client.get_inference_statistics()["model_stats"]) == len(index)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(
    "model,frames", [("tiny-sda", 8), ("tiny-sda-16f", 16), ("tiny-sda", 16), ("tiny-tsn", 8)]
)
def test_http_infer_frames_equals_onnx_runtime(oip, model_repo, binary, model, frames):
    server, _ = oip
    batch = _frames(2, frames, seed=frames)
    data = httpclient.InferInput("frames", list(batch.shape), "UINT8")
    data.set_data_from_numpy(batch, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("probs", "logits")]
    outputs.append(httpclient.InferRequestedOutput("probs", binary_data=binary, class_count=2))
    result = _http(server).infer(model, [data], outputs=outputs[:2], request_id="r1")
    expected = _direct(model_repo, model.split("-")[0] + "-" + model.split("-")[1], batch)
    assert result.get_response()["id"] == "r1" and result.get_response()["model_name"] == model
    np.testing.assert_allclose(result.as_numpy("probs"), expected["probs"], atol=TOL, rtol=0)
    np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], atol=1e-5, rtol=0)

    top = _http(server).infer(model, [data], outputs=[outputs[2]]).as_numpy("probs")
    assert top.shape == (2, 2)
    for row, probs in zip(top, expected["probs"], strict=True):
        first = row[0].decode() if isinstance(row[0], bytes) else row[0]
        score, index, label = first.split(":")
        assert int(index) == int(np.argmax(probs)) and label == LABELS[int(index)]
        assert abs(float(score) - probs.max()) < 1e-5


@pytest.mark.parametrize("clips,crops", [(1, 1), (2, 3)])
def test_http_infer_video_equals_classify(oip, video, clips, crops):
    server, _ = oip
    with server.client() as client:
        classified = client.post(
            "/classify",
            params={"model": "tiny-sda", "clips": clips, "crops": crops, "top_k": 3},
            files={"file": ("clip.mp4", video, "video/mp4")},
        ).json()
    files = np.array([video], dtype=object)
    data = httpclient.InferInput("video", [1], "BYTES")
    data.set_data_from_numpy(files, binary_data=True)
    result = _http(server).infer("tiny-sda", [data], parameters={"clips": clips, "crops": crops})
    probs, weights = result.as_numpy("probs"), result.as_numpy("dependency_weights")
    assert probs.shape == (1, 3) and weights.shape == (1, 16, 4)
    for prediction in classified["predictions"]:
        assert abs(probs[0, prediction["index"]] - prediction["score"]) <= TOL
    branches = classified["dependency_weights"]["branches"]
    for b, block in enumerate(classified["dependency_weights"]["blocks"]):
        for m, branch in enumerate(branches):
            assert abs(weights[0, b, m] - block["weights"][branch]) <= TOL


def test_json_video_is_base64_and_two_videos_give_two_rows(oip, video):
    server, _ = oip
    body = {
        "inputs": [
            {
                "name": "video",
                "datatype": "BYTES",
                "shape": [2],
                "data": [base64.b64encode(video).decode()] * 2,
            }
        ],
        "parameters": {"frames": 16},
        "outputs": [{"name": "probs"}],
    }
    with server.client() as client:
        response = client.post("/v2/models/tiny-sda/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()["outputs"]
    assert [o["name"] for o in out] == ["probs"] and out[0]["shape"] == [2, 3]
    assert out[0]["data"][:3] == out[0]["data"][3:]


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_errors_decode_in_tritonclient(oip, video):
    server, _ = oip
    client = _http(server)
    missing = _error(lambda: client.get_model_metadata("nope"))
    assert missing.status() == "404" and "unknown model 'nope'" in missing.message()
    assert _error(lambda: client.get_model_metadata("tiny-sda", "8")).status() == "404"

    wrong = httpclient.InferInput("frames", [1, 4, SIZE, SIZE, 3], "UINT8")
    wrong.set_data_from_numpy(_frames(1, 4), binary_data=True)
    shape = _error(lambda: client.infer("tiny-sda-8f", [wrong]))
    assert shape.status() == "400" and "[N, 8, 64, 64, 3]" in shape.message()

    junk = httpclient.InferInput("video", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"not a video at all" * 10], dtype=object))
    assert _error(lambda: client.infer("tiny-sda", [junk])).status() == "415"

    good = httpclient.InferInput("video", [1], "BYTES")
    good.set_data_from_numpy(np.array([video], dtype=object))
    crops = _error(lambda: client.infer("tiny-sda", [good], parameters={"crops": 2}))
    assert crops.status() == "422" and "crops must be 1 or 3" in crops.message()
    conflict = _error(lambda: client.infer("tiny-sda-8f", [good], parameters={"frames": 16}))
    assert conflict.status() == "422"

    with server.client() as raw:
        for response in (
            raw.get("/v2/nope"),
            raw.post("/v2/models/tiny-sda/infer", content=b"{not json"),
            raw.post(
                "/v2/models/tiny-sda/infer",
                json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
            ),
        ):
            assert response.status_code in (400, 404) and set(response.json()) == {"error"}, response.text
        frames = {"name": "frames", "datatype": "UINT8", "shape": [1, 8, SIZE, SIZE, 3]}
        for data, message in (
            ([300] * (8 * SIZE * SIZE * 3), "integers in [0, 255]"),
            ([0.5] * (8 * SIZE * SIZE * 3), "integers in [0, 255]"),
            ([0] * 7, "7 values for shape"),
        ):
            response = raw.post("/v2/models/tiny-sda/infer", json={"inputs": [{**frames, "data": data}]})
            assert response.status_code == 400 and message in response.json()["error"], response.text
        # a compressed body is limited by its inflated size (max_upload_bytes + 1 MiB of header)
        bomb = gzip.compress(b"\0" * (102 * 1024 * 1024), compresslevel=1)
        response = raw.post("/v2/models/tiny-sda/infer", content=bomb, headers={"content-encoding": "gzip"})
        assert response.status_code == 413 and "too large" in response.json()["error"], response.text
        small = gzip.compress(
            json.dumps({"inputs": [{**frames, "data": [0] * (8 * SIZE * SIZE * 3)}]}).encode()
        )
        response = raw.post(
            "/v2/models/tiny-sda-8f/infer", content=small, headers={"content-encoding": "gzip"}
        )
        assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [1, 3], response.text
        response = raw.post("/v2/models/tiny-sda/infer", content=small, headers={"content-encoding": "br"})
        assert response.status_code == 415 and "content encoding" in response.json()["error"]
        wrong_method = raw.put("/v2/models/tiny-sda/infer")
        assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}
        bad_bytes = {"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1], "data": [10**12]}]}
        response = raw.post("/v2/models/tiny-sda/infer", json=bad_bytes)
        assert response.status_code == 400 and "BYTES values must be strings" in response.json()["error"]


def test_infer_is_counted_with_classify_metrics(oip):
    server, _ = oip
    data = httpclient.InferInput("frames", [1, 8, SIZE, SIZE, 3], "UINT8")
    data.set_data_from_numpy(_frames(1, 8))

    def total_count() -> float:
        with server.client() as client:
            text = client.get("/metrics").text
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('sda_stage_duration_seconds_count{stage="total"}')
        )

    before = total_count()
    before_stats = _http(server).get_inference_statistics("tiny-sda-8f")["model_stats"][0]
    _http(server).infer("tiny-sda-8f", [data])
    assert total_count() == before + 1
    stats = _http(server).get_inference_statistics("tiny-sda-8f")["model_stats"][0]
    assert stats["inference_count"] == before_stats["inference_count"] + 1
    assert (
        stats["inference_stats"]["success"]["count"]
        == before_stats["inference_stats"]["success"]["count"] + 1
    )
    assert stats["execution_count"] >= 1


def test_grpc_health_metadata_and_infer(oip, model_repo, video):
    server, port = oip
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny-sda-16f", "1") and not client.is_model_ready("tiny-sda", "8")
    meta = client.get_model_metadata("tiny-sda-16f", as_json=True)
    assert meta["inputs"][0]["shape"] == ["-1", "16", str(SIZE), str(SIZE), "3"]
    assert "binary_tensor_data" in client.get_server_metadata(as_json=True)["extensions"]
    config = client.get_model_config("tiny-sda-16f", as_json=True)["config"]
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == ["16", str(SIZE), str(SIZE), "3"]
    assert (
        config["input"][0]["data_type"] == "TYPE_UINT8"
        and config["output"][0]["label_filename"] == "labels.txt"
    )
    assert {m.name for m in client.get_model_repository_index().models} >= {"tiny-sda", "tiny-sda-16f"}

    batch = _frames(3, 16, seed=3)
    data = grpcclient.InferInput("frames", list(batch.shape), "UINT8")
    data.set_data_from_numpy(batch)
    result = client.infer("tiny-sda-16f", [data])
    expected = _direct(model_repo, "tiny-sda", batch)
    np.testing.assert_allclose(result.as_numpy("probs"), expected["probs"], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        result.as_numpy("dependency_weights"), expected["dependency_weights"], atol=TOL, rtol=0
    )

    files = grpcclient.InferInput("video", [1], "BYTES")
    files.set_data_from_numpy(np.array([video], dtype=object))
    from_grpc = client.infer("tiny-sda", [files]).as_numpy("probs")
    with server.client() as http:
        classified = http.post(
            "/classify",
            params={"model": "tiny-sda", "top_k": 3},
            files={"file": ("c.mp4", video, "video/mp4")},
        ).json()
    for prediction in classified["predictions"]:
        assert abs(from_grpc[0, prediction["index"]] - prediction["score"]) <= TOL

    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    stats = client.get_inference_statistics("tiny-sda-16f", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 3 and int(stats["inference_stats"]["success"]["count"]) >= 1
    assert len(client.get_inference_statistics(as_json=True)["model_stats"]) == 5
    with server.client() as http:
        metrics = http.get("/metrics").text
    assert 'sda_grpc_requests_total{code="OK",method="ModelInfer"}' in metrics
    assert 'sda_grpc_requests_total{code="NOT_FOUND",method="ModelMetadata"}' in metrics
    bad = grpcclient.InferInput("frames", [1, 4, SIZE, SIZE, 3], "UINT8")
    bad.set_data_from_numpy(_frames(1, 4))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny-sda-8f", [bad])
    assert (
        caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        and "[N, 8, 64, 64, 3]" in caught.value.message()
    )


KSERVE_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferRequest, InferInput, RESTConfig

async def main(url, model):
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    out = {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
           "model_ready": await client.is_model_ready(url, model)}
    batch = np.random.default_rng(5).integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    for binary in (False, True):
        data = InferInput("frames", list(batch.shape), "UINT8")
        data.set_data_from_numpy(batch, binary_data=binary)
        response = await client.infer(url, InferRequest(model, infer_inputs=[data]), model_name=model)
        probs = next(o for o in response.outputs if o.name == "probs")
        out[f"probs_binary_{binary}"] = probs.as_numpy().tolist()
    video = InferInput("video", [1], "BYTES")
    video.set_data_from_numpy(np.array([open(sys.argv[3], "rb").read()], dtype=object), binary_data=True)
    response = await client.infer(
        url, InferRequest(model, infer_inputs=[video], parameters={"clips": 2, "crops": 3}), model_name=model
    )
    out["video_probs"] = next(o for o in response.outputs if o.name == "probs").as_numpy().tolist()
    try:
        await client.infer(url, InferRequest("nope", infer_inputs=[data]), model_name="nope")
    except Exception as error:
        out["error"] = str(error)
    await client.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_kserve_rest_client(oip, model_repo, video, tmp_path):
    server, _ = oip
    (tmp_path / "clip.mp4").write_bytes(video)
    done = subprocess.run(
        [sys.executable, "-c", KSERVE_SCRIPT, server.url, "tiny-sda", str(tmp_path / "clip.mp4")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["live"] and out["ready"] and out["model_ready"]
    expected = _direct(
        model_repo, "tiny-sda", np.random.default_rng(5).integers(0, 256, (1, 8, 64, 64, 3), dtype=np.uint8)
    )
    for binary in (False, True):
        np.testing.assert_allclose(
            np.array(out[f"probs_binary_{binary}"]), expected["probs"], atol=TOL, rtol=0
        )
    assert "unknown model 'nope'" in out["error"]
    with server.client() as client:
        classified = client.post(
            "/classify",
            params={"model": "tiny-sda", "clips": 2, "crops": 3, "top_k": 3},
            files={"file": ("clip.mp4", video, "video/mp4")},
        ).json()
    for prediction in classified["predictions"]:
        assert abs(out["video_probs"][0][prediction["index"]] - prediction["score"]) <= TOL


def test_unknown_model_over_raw_http_is_an_error_body(oip):
    server, _ = oip
    response = httpx.get(f"{server.url}/v2/models/nope/ready")
    assert response.status_code == 404 and "error" in response.json()


def test_sigterm_drain_makes_grpc_and_v2_unready_then_exits(tsn_only_repo, tmp_path):
    # admitted = body complete and decoding (a slow upload holds no slot): a one-keyframe 1080p clip
    # of 1800 frames takes seconds to decode, so the drain is still on while the checks run
    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 1800)
    grpc_port = free_port()
    server = start_server(tsn_only_repo, tmp_path / "server.log", grpc_port=grpc_port)

    def admitted_request() -> int:
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            return client.post(
                "/classify", content=long_decode, headers={"content-type": "video/mp4"}
            ).status_code

    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(admitted_request)
            deadline = time.monotonic() + 20
            while httpx.get(f"{server.url}/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert not client.is_server_ready() and client.is_server_live()
            frames = grpcclient.InferInput("frames", [1, 8, SIZE, SIZE, 3], "UINT8")
            frames.set_data_from_numpy(_frames(1, 8))
            with pytest.raises(InferenceServerException) as caught:
                client.infer("tiny-tsn", [frames])
            assert caught.value.status() == "StatusCode.UNAVAILABLE"
            ready = httpx.get(f"{server.url}/v2/health/ready")
            assert ready.status_code == 503 and "shutting down" in ready.json()["error"]
            assert future.result(timeout=60) == 200
        assert server.process.wait(30) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_a_grpc_port_in_use_stops_the_start_with_a_message(tsn_only_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            server_command(tsn_only_repo, free_port()),
            env=server_env(grpc_port=port),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert done.returncode == 3, done.stderr
    assert f"sda-serve cannot start: cannot listen for OIP gRPC on 127.0.0.1:{port}" in done.stderr
