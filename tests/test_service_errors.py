"""Bad inputs get the right 4xx with a JSON ``detail`` that says what was wrong; never a 500.
In-process (``app``): status codes and messages need no socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from clips import encode_audio_only, encode_clip, random_bytes, write_png


@pytest.fixture(scope="module")
def bad_files(clip_dir: Path) -> dict[str, Path]:
    good = encode_clip(clip_dir / "errors-good.mp4", frames=24)
    # moov first (faststart), so a cut file still has its header but loses most frames' data
    data = encode_clip(
        clip_dir / "faststart.mp4", frames=24, container_options={"movflags": "faststart"}
    ).read_bytes()
    truncated = clip_dir / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    headless = clip_dir / "headless.mp4"  # moov at the end: cut off with it
    headless.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    noise = clip_dir / "random.bin"
    noise.write_bytes(random_bytes(5000))
    return {
        "good": good,
        "truncated": truncated,
        "headless": headless,
        "random": noise,
        "png": write_png(clip_dir / "still.png"),
        "audio": encode_audio_only(clip_dir / "audio-only.m4a"),
    }


def post_file(client, path: Path, field: str = "file", **params):
    with path.open("rb") as f:
        return client.post(
            "/classify", params=params, files={field: (path.name, f, "application/octet-stream")}
        )


def expect(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("random", 415, ["not a readable video"]),
        ("png", 415, ["image"]),
        ("audio", 415, ["video stream"]),
        ("truncated", 422, []),
        ("headless", 415, ["truncated"]),
    ],
)
def test_files_that_are_not_good_videos(app, bad_files, name, status, words):
    with app.client() as client:
        expect(post_file(client, bad_files[name]), status, *words)


def test_empty_bodies(app):
    with app.client() as client:
        expect(client.post("/classify", content=b"", headers={"content-type": "video/mp4"}), 422, "empty")
        expect(client.post("/classify"), 422, "empty")
        empty = client.post("/classify", files={"file": ("empty.mp4", b"", "video/mp4")})
        expect(empty, 422, "empty")


def test_wrong_multipart_field_name(app, bad_files):
    with app.client() as client:
        expect(post_file(client, bad_files["good"], field="video"), 422, "'file'", "'video'")


def test_unsupported_content_type(app, bad_files):
    with app.client() as client:
        response = client.post(
            "/classify", content=bad_files["good"].read_bytes(), headers={"content-type": "application/json"}
        )
        expect(response, 415, "content type", "multipart/form-data")


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"frames": 7}, 422, ["frames", "8, 16"]),
        ({"frames": "abc"}, 422, ["frames", "integer"]),
        ({"top_k": 0}, 422, ["top_k", "greater than or equal to 1"]),
        ({"top_k": 4}, 422, ["top_k", "3"]),
        ({"clips": 0}, 422, ["clips"]),
        ({"clips": 5}, 422, ["clips", "4"]),
        ({"crops": 2}, 422, ["crops", "1 or 3"]),
        ({"model": "nope"}, 404, ["nope", "tiny-sda"]),
        ({"model": "tiny-tsn", "frames": 16}, 422, ["frames", "8"]),
        ({"model": "tiny-sda", "version": "9"}, 404, ["version"]),
    ],
)
def test_invalid_options(app, bad_files, params, status, words):
    with app.client() as client:
        expect(post_file(client, bad_files["good"], **params), status, *words)


def test_no_error_was_a_500_and_the_server_is_still_healthy(app, bad_files):
    with app.client() as client:
        for path in bad_files.values():
            assert post_file(client, path).status_code < 500
        assert client.get("/health").json()["status"] == "ok"
        assert post_file(client, bad_files["good"]).status_code == 200
        metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
    assert 'sda_decode_failures_total{error="NotAVideoError"}' in metrics
