"""Classify through the application in-process (``app``: real lifespan, real ONNX Runtime sessions,
real decode pool; httpx's ASGI transport instead of a socket): real clips in many containers.

The reference for "is the answer right" is the same exported graph run directly with ONNX Runtime
on frames decoded by ``videocore.decode`` and sampled by ``videocore.sampling``: it checks the whole
service plumbing (upload, sampling, decode, crops, batching, averaging, response) end to end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from clips import encode_clip

from service.testing import serve_in_process
from videocore.contract import GraphMetadata
from videocore.decode import VideoLimits, probe_and_decode
from videocore.sampling import sample_segment_indices
from videocore.views import resize_short_side_center_crop, three_crops

TOP_KEYS = {"model", "predictions", "dependency_weights", "video", "sampled", "timings_ms", "warnings"}

# name -> (encode_clip kwargs, expected codec, display width, height, frames, rotation)
CLIPS = {
    "h264.mp4": ({"codec": "libx264", "width": 96, "height": 64, "frames": 30}, "h264", 96, 64, 30, 0),
    "vp9.webm": ({"codec": "libvpx-vp9"}, "vp9", 64, 48, 24, 0),
    "mpeg4.avi": ({"codec": "mpeg4"}, "mpeg4", 64, 48, 24, 0),
    "mjpeg.avi": ({"codec": "mjpeg", "pix_fmt": "yuvj420p"}, "mjpeg", 64, 48, 24, 0),
    "hevc.mkv": ({"codec": "libx265"}, "hevc", 64, 48, 24, 0),
    "odd.mp4": ({"width": 63, "height": 47, "pix_fmt": "yuv444p"}, "h264", 63, 47, 24, 0),
    "rotated.mp4": ({"width": 48, "height": 64, "rotation": 90}, "h264", 48, 64, 24, 90),
    "one-frame.mp4": ({"frames": 1}, "h264", 64, 48, 1, 0),
    "audio.mp4": ({"audio": True}, "h264", 64, 48, 24, 0),
    "vfr.mkv": ({"vfr": True}, "h264", 64, 48, 24, 0),
}


@pytest.fixture(scope="module")
def clip(clip_dir: Path):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = encode_clip(clip_dir / name, **CLIPS[name][0])
        return made[name]

    return get


def classify(client, path: Path, **params):
    with path.open("rb") as f:
        return client.post(
            "/classify", params=params, files={"file": (path.name, f, "application/octet-stream")}
        )


def check_schema(body: dict, *, frames: int, clips: int = 1, sda: bool = True) -> None:
    assert set(body) == TOP_KEYS
    assert body["warnings"] == []  # the test clips are clean
    assert set(body["model"]) == {"name", "version", "frames", "precision", "provider"}
    assert body["model"]["precision"] == "fp32"
    assert body["model"]["frames"] == frames
    assert body["model"]["provider"] == "CPUExecutionProvider"
    preds = body["predictions"]
    assert [set(p) for p in preds] == [{"index", "label", "score"}] * len(preds)
    scores = [p["score"] for p in preds]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    deps = body["dependency_weights"]
    assert set(deps) == {"branches", "blocks", "stages"}
    if sda:
        assert deps["branches"] == ["LST", "LT", "LS", "S122"]
        assert len(deps["blocks"]) == 16 and deps["blocks"][0]["block"] == "layer1.0"
        for row in deps["blocks"]:
            assert set(row["weights"]) == set(deps["branches"])
            assert sum(row["weights"].values()) == pytest.approx(1.0, abs=1e-4)  # softmax over branches
        assert [s["stage"] for s in deps["stages"]] == ["layer1", "layer2", "layer3", "layer4"]
    else:
        assert deps == {"branches": [], "blocks": [], "stages": []}
    assert set(body["video"]) == {
        "container",
        "codec",
        "width",
        "height",
        "fps",
        "duration_s",
        "frames",
        "rotation",
    }
    sampled = body["sampled"]
    assert len(sampled["indices"]) == len(sampled["timestamps_s"]) == clips
    assert all(len(ix) == frames for ix in sampled["indices"])
    stages = {"upload", "decode_wait", "decode", "preprocess", "queue", "inference"}
    assert set(body["timings_ms"]) == {*stages, "total"}
    # the stages cover the request: they add up to the total but for the event loop's hand-offs
    # (typically < 1 ms; up to ~15 ms seen on a 2-core machine shared with other test runs)
    assert 0 <= body["timings_ms"]["total"] - sum(body["timings_ms"][s] for s in stages) < 25.0
    assert all(v >= 0 for v in body["timings_ms"].values())
    assert body["timings_ms"]["total"] >= body["timings_ms"]["inference"]


@pytest.mark.parametrize("name", list(CLIPS))
def test_every_container_answers_200_with_the_schema(app, clip, name):
    _, codec, width, height, frames, rotation = CLIPS[name]
    with app.client() as client:
        response = classify(client, clip(name))
    assert response.status_code == 200, response.text
    body = response.json()
    check_schema(body, frames=8)
    assert body["model"] == {
        "name": "tiny-sda",
        "version": "1",
        "frames": 8,
        "precision": "fp32",
        "provider": "CPUExecutionProvider",
    }
    assert len(body["predictions"]) == 3  # default top-5, capped at the 3 classes
    assert sum(p["score"] for p in body["predictions"]) == pytest.approx(1.0, abs=1e-5)
    video = body["video"]
    assert (video["codec"], video["width"], video["height"]) == (codec, width, height)
    assert (video["frames"], video["rotation"]) == (frames, rotation)
    assert body["sampled"]["indices"] == [sample_segment_indices(frames, 8, "test")]
    assert response.headers["x-request-id"]


def reference(
    graph: Path, video: Path, *, frames: int, clips: int, crops: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the graph directly on the clip, the way the service is documented to: mean over rows."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    meta = GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    assert meta.frames == frames
    decoded = probe_and_decode(
        video,
        lambda n: [
            sample_segment_indices(n, frames, "test", clip_index=k, num_clips=clips) for k in range(clips)
        ],
        VideoLimits(),
        resize_short_side=meta.resize_short_side,
    )
    rows = []
    for frames_ in decoded.clips:
        if crops == 1:
            rows.append(resize_short_side_center_crop(frames_, meta.resize_short_side, meta.input_size)[None])
        else:
            rows.append(three_crops(frames_, meta.resize_short_side, meta.input_size))
    batch = np.concatenate(rows)
    assert batch.shape == (clips * crops, frames, meta.input_size, meta.input_size, 3)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"frames": batch}), strict=True))
    weights = outputs.get("dependency_weights")
    return outputs["probs"].mean(axis=0), None if weights is None else weights.mean(axis=0)


@pytest.mark.parametrize(
    ("model", "frames", "clips", "crops"),
    [("tiny-sda", 8, 1, 1), ("tiny-sda", 16, 2, 3), ("tiny-sda", 8, 3, 1), ("tiny-tsn", 8, 1, 3)],
)
def test_predictions_match_the_graph_run_directly(app, model_repo, clip, model, frames, clips, crops):
    video = clip("h264.mp4")
    with app.client() as client:
        response = classify(client, video, model=model, frames=frames, clips=clips, crops=crops, top_k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    check_schema(body, frames=frames, clips=clips, sda=model == "tiny-sda")
    probs, weights = reference(
        model_repo / model / "1" / f"model-{frames}f.onnx", video, frames=frames, clips=clips, crops=crops
    )
    order = np.argsort(-probs, kind="stable")
    assert [p["index"] for p in body["predictions"]] == order.tolist()
    labels = ("push", "pull", "spin")
    assert [p["label"] for p in body["predictions"]] == [labels[i] for i in order]
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], probs[order], atol=2e-5)
    assert body["sampled"]["indices"] == [
        sample_segment_indices(30, frames, "test", clip_index=k, num_clips=clips) for k in range(clips)
    ]
    if weights is not None:
        deps = body["dependency_weights"]
        served = np.array([[row["weights"][b] for b in deps["branches"]] for row in deps["blocks"]])
        np.testing.assert_allclose(served, weights, atol=2e-5)
        np.testing.assert_allclose(
            [list(s["weights"].values()) for s in deps["stages"]],
            [weights[0:3].mean(0), weights[3:7].mean(0), weights[7:13].mean(0), weights[13:16].mean(0)],
            atol=2e-5,
        )
    # The spread of predictions shows the test graphs are not ~uniform (the comparison means something).
    assert probs.max() - probs.min() > 0.05


@pytest.mark.parametrize("content_type", ["video/mp4", "application/octet-stream"])
def test_raw_body_upload_equals_multipart(app, clip, content_type):
    video = clip("h264.mp4")
    with app.client() as client:
        raw = client.post("/classify", content=video.read_bytes(), headers={"content-type": content_type})
        multipart = classify(client, video)
    assert raw.status_code == 200, raw.text
    assert raw.json()["predictions"] == multipart.json()["predictions"]


def test_top_k_limits_the_predictions(app, clip):
    with app.client() as client:
        body = classify(client, clip("h264.mp4"), top_k=1).json()
    assert len(body["predictions"]) == 1


def test_concurrent_requests_all_answer_correctly(app, clip):
    """Requests racing through the batcher each get their own rows back."""
    from concurrent.futures import ThreadPoolExecutor

    videos = [clip("h264.mp4"), clip("vp9.webm"), clip("mpeg4.avi"), clip("one-frame.mp4")] * 2
    with app.client() as client:
        expected = {v: classify(client, v).json()["predictions"] for v in set(videos)}
        with ThreadPoolExecutor(len(videos)) as pool:
            responses = list(pool.map(lambda v: classify(client, v), videos))
    for video, response in zip(videos, responses, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
        assert [p["index"] for p in got] == [p["index"] for p in expected[video]]
        np.testing.assert_allclose(
            [p["score"] for p in got], [p["score"] for p in expected[video]], atol=2e-5
        )


def test_health_ready_models_and_v2(app):
    with app.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["ready"] is True
        assert health["provider"] == "CPUExecutionProvider"
        assert health["providers"]["fallback"] is False
        assert health["models"] == ["tiny-sda", "tiny-tsn"] and health["default_model"] == "tiny-sda"
        assert client.get("/ready").json() == {"ready": True}

        models = client.get("/models").json()
        assert models["default_model"] == "tiny-sda"
        by_name = {m["name"]: m for m in models["models"]}
        assert by_name["tiny-sda"]["labels"] == ["push", "pull", "spin"]
        assert [g["frames"] for g in by_name["tiny-sda"]["graphs"]] == [8, 16]
        assert by_name["tiny-sda"]["graphs"][0]["input_size"] == 64
        assert by_name["tiny-sda"]["branches"] == ["LST", "LT", "LS", "S122"]
        assert by_name["tiny-tsn"]["blocks"] == [] and by_name["tiny-tsn"]["default"] is False
        # Graphs that name no default frame count are served at the smallest one exported.
        assert by_name["tiny-sda"]["default_frames"] == 8 and by_name["tiny-tsn"]["default_frames"] == 8

        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        v2 = client.get("/v2/models/tiny-sda").json()
        assert v2["name"] == "tiny-sda" and v2["versions"] == ["1"] and v2["platform"] == "onnxruntime_onnx"
        # the plain name is the graph at the default frame count; tiny-sda-16f is the other one
        assert v2["inputs"] == [
            {"name": "frames", "datatype": "UINT8", "shape": [-1, 8, 64, 64, 3]},
            {"name": "video", "datatype": "BYTES", "shape": [-1]},
        ]
        outputs = {o["name"]: o for o in v2["outputs"]}
        assert outputs["probs"] == {"name": "probs", "datatype": "FP32", "shape": [-1, 3]}
        assert outputs["dependency_weights"]["shape"] == [-1, 16, 4]
        tsn = client.get("/v2/models/tiny-tsn").json()
        assert tsn["inputs"][0]["shape"] == [-1, 8, 64, 64, 3]
        assert "dependency_weights" not in {o["name"] for o in tsn["outputs"]}
        missing = client.get("/v2/models/nope")
        assert missing.status_code == 404 and "tiny-sda" in missing.json()["error"]

        openapi = client.get("/openapi.json").json()
        assert "/classify" in openapi["paths"]
        assert "multipart/form-data" in openapi["paths"]["/classify"]["post"]["requestBody"]["content"]
        assert client.get("/docs").status_code == 200


def test_metrics_count_requests_stages_and_batches(app, clip):
    with app.client() as client:
        assert classify(client, clip("h264.mp4")).status_code == 200
        assert client.post("/classify", params={"frames": 7}, content=b"x").status_code == 422
        text = client.get("/metrics").text
    assert 'sda_http_requests_total{method="POST",route="/classify",status="200"}' in text
    assert 'sda_http_requests_total{method="POST",route="/classify",status="422"}' in text
    for stage in ("decode", "preprocess", "queue", "inference", "total"):
        assert f'sda_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert 'sda_batch_rows_count{model="tiny-sda/1/8f"}' in text
    assert "sda_requests_in_flight 0.0" in text
    assert 'status="500"' not in text


def name_default_frames(graph: Path, frames: int) -> None:
    """Set the graph's ``default_frames`` metadata, as ``python -m export --default-frames`` writes it."""
    proto = onnx.load(str(graph))
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, "default_frames": str(frames)})  # replaces them all
    onnx.save(proto, str(graph))


def test_a_request_without_frames_gets_the_models_default_frame_count(model_repo, clip, tmp_path, caplog):
    repo = tmp_path / "models"
    shutil.copytree(model_repo / "tiny-sda", repo / "tiny-sda")
    for graph in (repo / "tiny-sda" / "1").glob("model-*f.onnx"):
        name_default_frames(graph, 16)
    # A model whose named default frame count was not exported (or was deleted): the smallest one.
    shutil.copytree(model_repo / "tiny-tsn", repo / "tiny-tsn")
    name_default_frames(repo / "tiny-tsn" / "1" / "model-8f.onnx", 16)
    caplog.set_level("WARNING", logger="sda_serve")
    with serve_in_process(repo, default_model="tiny-sda") as server, server.client() as client:
        by_name = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert by_name["tiny-sda"]["default_frames"] == 16
        assert by_name["tiny-tsn"]["default_frames"] == 8
        unnamed = classify(client, clip("h264.mp4"))
        named = classify(client, clip("h264.mp4"), frames=8)
        tsn = classify(client, clip("h264.mp4"), model="tiny-tsn")
    assert unnamed.status_code == named.status_code == tsn.status_code == 200
    check_schema(unnamed.json(), frames=16)
    assert unnamed.json()["sampled"]["indices"] == [sample_segment_indices(30, 16, "test")]
    check_schema(named.json(), frames=8)
    check_schema(tsn.json(), frames=8, sda=False)
    assert "tiny-tsn v1: its graphs name default frame count(s) [16] but only [8] are served" in caplog.text

    # The operator's SDA_DEFAULT_FRAMES wins for every model that has that graph.
    caplog.clear()
    with (
        serve_in_process(repo, default_model="tiny-sda", default_frames=8) as server,
        server.client() as client,
    ):
        assert {m["name"]: m["default_frames"] for m in client.get("/models").json()["models"]} == {
            "tiny-sda": 8,
            "tiny-tsn": 8,
        }
        overridden = classify(client, clip("h264.mp4"))
    assert overridden.status_code == 200
    check_schema(overridden.json(), frames=8)
    assert "tiny-sda v1: its graphs name" not in caplog.text  # overriding a default is not a warning
