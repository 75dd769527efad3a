"""The HTTP API in-process (``service.testing.serve_in_process``: the application with its lifespan,
real ONNX Runtime sessions, httpx's ASGI transport): every route's answers and error statuses, the API
key, request ids, the video limits and what the OpenAPI schema promises, on the tiny test graphs with
real clips encoded with PyAV."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from clips import encode_clip

from service.testing import InProcessServer, serve_in_process

KEY = "in-process-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Routes behind the API key (when one is set), and routes that stay open for probes and browsers.
MODEL_ROUTES = [
    "/models",
    "/v2/models/tiny-sda",
    "/v2/models/tiny-sda/versions/1",
    "/v2/models/tiny-sda/ready",
]
OPEN_ROUTES = ["/health", "/ready", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/", "/docs"]


@pytest.fixture(scope="module")
def keyed(model_repo: Path) -> Iterator[InProcessServer]:
    with serve_in_process(model_repo, api_key=KEY, default_model="tiny-sda") as server:
        yield server


@pytest.fixture(scope="module")
def video(clip_dir: Path) -> bytes:
    return encode_clip(clip_dir / "api.mp4", frames=24).read_bytes()


def classify(client, data: bytes, headers: dict | None = None, **params):
    files = {"file": ("clip.mp4", data, "video/mp4")}
    return client.post("/classify", params=params, files=files, headers=headers or {})


def expect(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    # the Open Inference Protocol's error body is {"error": ...}; every other route's {"detail": ...}
    key = "error" if response.request.url.path.startswith("/v2") else "detail"
    detail = response.json()[key]
    assert isinstance(detail, str)
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


# ------------------------------------------------------------------------------------------ API key
def test_the_api_key_guards_every_model_route(keyed: InProcessServer, video: bytes):
    with keyed.client() as client:
        for path in MODEL_ROUTES:
            missing = client.get(path)
            expect(missing, 401, "missing API key", "Authorization: Bearer")
            assert missing.headers["www-authenticate"] == "Bearer"
            expect(client.get(path, headers={"Authorization": "Bearer nope"}), 401, "wrong API key")
            expect(client.get(path, headers={"Authorization": f"Basic {KEY}"}), 401, "missing API key")
            assert client.get(path, headers=AUTH).status_code == 200, path
        expect(classify(client, video), 401, "missing API key")
        expect(classify(client, video, {"Authorization": "Bearer nope"}), 401, "wrong API key")
        assert classify(client, video, AUTH).status_code == 200


def test_probes_metrics_and_the_page_need_no_key(keyed: InProcessServer):
    with keyed.client() as client:
        for path in OPEN_ROUTES:
            assert client.get(path).status_code == 200, path


def test_the_key_is_checked_before_the_request_is_validated(keyed: InProcessServer, video: bytes):
    """Without the key a caller learns nothing about models or options."""
    with keyed.client() as client:
        for params in ({"frames": "abc"}, {"model": "nope"}, {"top_k": 0}):
            expect(classify(client, video, **params), 401, "missing API key")
        expect(client.get("/v2/models/nope"), 401)


def test_without_a_key_the_model_routes_are_open(app: InProcessServer):
    with app.client() as client:
        for path in MODEL_ROUTES:
            assert client.get(path).status_code == 200, path
            # a key sent to a service that has none is ignored, not refused
            assert client.get(path, headers={"Authorization": "Bearer whatever"}).status_code == 200, path


# ------------------------------------------------------------------------------- OIP v2 and others
def test_v2_server_metadata(app: InProcessServer):
    with app.client() as client:
        version = client.get("/openapi.json").json()["info"]["version"]
        server = client.get("/v2").json()
        assert (server["name"], server["version"]) == ("sda-serve", version)
        assert {"binary_tensor_data", "classification", "model_configuration"} <= set(server["extensions"])


def test_v2_model_version_and_readiness(app: InProcessServer):
    with app.client() as client:
        sda = client.get("/v2/models/tiny-sda/versions/1").json()
        assert sda["name"] == "tiny-sda" and sda["versions"] == ["1"]
        # exported at 8 and 16 frames: the plain name is the default (smallest) frame count's graph,
        # <name>-16f the other one; each names its exact frames dimension
        frames_input = {"name": "frames", "datatype": "UINT8", "shape": [-1, 8, 64, 64, 3]}
        assert sda["inputs"][0] == frames_input
        sixteen = client.get("/v2/models/tiny-sda-16f").json()["inputs"][0]
        assert sixteen == {**frames_input, "shape": [-1, 16, 64, 64, 3]}
        assert client.get("/v2/models/tiny-sda").json() == sda
        for name in ("tiny-sda", "tiny-tsn"):
            ready = client.get(f"/v2/models/{name}/ready").json()
            assert (ready["name"], ready["ready"]) == (name, True)


def test_v2_unknown_model_or_version_is_404_naming_what_exists(app: InProcessServer):
    with app.client() as client:
        expect(client.get("/v2/models/nope/ready"), 404, "unknown model", "tiny-sda", "tiny-tsn")
        expect(client.get("/v2/models/nope/versions/1"), 404, "unknown model", "tiny-sda")
        expect(client.get("/v2/models/tiny-sda/versions/9"), 404, "has no version '9'", "available: 1")


def test_unknown_routes_and_wrong_methods_answer_json(app: InProcessServer):
    with app.client() as client:
        expect(client.get("/nope"), 404, "not found")
        expect(client.get("/classify"), 405, "method not allowed")
        expect(client.post("/models"), 405, "method not allowed")
        expect(client.get("/static/nope.js"), 404)


def test_metrics_are_prometheus_text(app: InProcessServer):
    with app.client() as client:
        client.get("/health")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'sda_http_requests_total{method="GET",route="/health",status="200"}' in response.text
    assert "# TYPE sda_stage_duration_seconds histogram" in response.text


def test_request_ids_are_echoed_or_made(app: InProcessServer, video: bytes):
    with app.client() as client:
        ok = classify(client, video, {"X-Request-ID": "trace-1.a_B"})
        failed = classify(client, video, {"X-Request-ID": "trace-2"}, frames=7)
        assert (ok.status_code, ok.headers["x-request-id"]) == (200, "trace-1.a_B")
        assert (failed.status_code, failed.headers["x-request-id"]) == (422, "trace-2")
        made = [
            client.get("/health", headers=headers).headers["x-request-id"]
            for headers in ({}, {}, {"X-Request-ID": "has space"}, {"X-Request-ID": "x" * 65})
        ]
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in made), made
    assert len(set(made)) == len(made)


# --------------------------------------------------------------------------- classify: more options
def test_top_k_returns_the_head_of_the_full_ranking(app: InProcessServer, video: bytes):
    with app.client() as client:
        ranking = classify(client, video, top_k=3).json()["predictions"]
        for k in (1, 2):
            assert classify(client, video, top_k=k).json()["predictions"] == ranking[:k]
    assert [p["score"] for p in ranking] == sorted((p["score"] for p in ranking), reverse=True)
    assert sorted(p["index"] for p in ranking) == [0, 1, 2]


def test_malformed_requests_are_422(app: InProcessServer, video: bytes):
    with app.client() as client:
        no_boundary = client.post("/classify", content=video, headers={"content-type": "multipart/form-data"})
        expect(no_boundary, 422, "without a boundary")
        garbage = client.post(
            "/classify", content=b"not a form", headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        expect(garbage, 422, "malformed multipart body")
        expect(classify(client, video, thumbnails="maybe"), 422, "thumbnails")
        expect(classify(client, video, clips="two"), 422, "clips", "integer")
        expect(classify(client, video, crops=3.5), 422, "crops")


def test_the_openapi_schema_documents_every_error_status(app: InProcessServer):
    with app.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert {"401", "404", "413", "415", "422", "503"} <= set(paths["/classify"]["post"]["responses"])
    assert {"401", "503"} <= set(paths["/models"]["get"]["responses"])
    for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}", "/v2/models/{name}/ready"):
        assert {"401", "404"} <= set(paths[path]["get"]["responses"]), path
    assert "503" in paths["/ready"]["get"]["responses"]


# ----------------------------------------------------------------------------------- video limits
@pytest.fixture(scope="module")
def tight(tsn_only_repo: Path) -> Iterator[InProcessServer]:
    with serve_in_process(
        tsn_only_repo, max_pixels=64 * 48, max_duration_s=1.0, max_decoded_frames=10
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("clip", "words"),
    [
        ({"width": 96, "height": 64, "frames": 6}, ["frame size 96x64", "max_pixels"]),
        ({"frames": 8, "fps": 4}, ["duration", "max_duration_s"]),  # 2 s
        ({"frames": 11, "fps": 24}, ["number of frames", "max_decoded_frames"]),
    ],
)
def test_a_video_over_a_limit_is_422_naming_the_setting(
    tight: InProcessServer, clip_dir: Path, clip: dict, words: list[str]
):
    over = encode_clip(clip_dir / f"over-{'-'.join(map(str, clip.values()))}.mp4", **clip).read_bytes()
    within = encode_clip(clip_dir / "within.mp4", frames=8, fps=12).read_bytes()  # 64x48, 0.67 s
    with tight.client() as client:
        expect(classify(client, over), 422, *words)
        assert classify(client, within).status_code == 200
