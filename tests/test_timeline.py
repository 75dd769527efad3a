"""POST /timeline and the pieces under it: videocore's one-pass window decoding and its window plan and
smoothing, the route on the tiny graphs (JSON, NDJSON streaming, limits, errors) and the embedded default
model on an untrimmed synthetic sequence with known cuts (real clips encoded here, real ORT sessions)."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from clips import encode_clip, read_index
from conftest import ROOT

from model.data.synthetic import render_sequence
from model.evaluate import encode_mp4
from model.timeline_eval import boundary_errors, segment_matches, windows_inside
from service.testing import InProcessServer, serve_in_process, start_server
from videocore.decode import decode_windows, probe_and_decode
from videocore.timeline import Window, plan_windows, segments, smooth_labels, window_starts

NDJSON = {"Accept": "application/x-ndjson"}


# ------------------------------------------------------------------------------ videocore: plan, smoothing
def test_windows_cover_the_video_and_the_last_one_ends_at_its_end():
    assert window_starts(10.0, 4.0, 2.0) == [0.0, 2.0, 4.0, 6.0]
    assert window_starts(9.0, 4.0, 2.0) == [0.0, 2.0, 4.0, 5.0]  # moved back to end at 9 s
    assert window_starts(3.0, 4.0, 2.0) == [0.0]  # shorter than one window: the whole video
    windows = plan_windows(100, 10.0, 10.0, 8, 4.0, 2.0)
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    # each window is sampled like a trimmed clip of its own frames (TSN segment centres)
    assert windows[1].indices == [22, 27, 32, 37, 42, 47, 52, 57]
    assert all(0 <= i < 100 for w in windows for i in w.indices)


def test_mode_filter_and_segments():
    assert smooth_labels([0, 0, 1, 0, 0, 2, 2, 2], 3) == [0, 0, 0, 0, 0, 2, 2, 2]
    assert smooth_labels([0, 1, 2], 1) == [0, 1, 2]
    labels = [0, 0, 0, 1, 0, 2, 2, 2]
    probs = np.full((8, 3), 0.1)
    probs[np.arange(8), labels] = 0.8
    windows = [Window(k * 1.0, k * 1.0 + 2.0, []) for k in range(8)]  # centres 1..8 s
    found = segments(probs, windows, 9.0, smooth=3)
    assert [(s.label, s.start_s, s.end_s) for s in found] == [(0, 0.0, 5.5), (2, 5.5, 9.0)]
    assert found[0].confidence == pytest.approx((0.8 * 4 + 0.1) / 5)
    assert [s.label for s in segments(probs, windows, 9.0, smooth=3, min_score=0.75)] == [2]


def test_decode_windows_is_one_pass_with_the_frames_probe_and_decode_returns(clip_dir: Path):
    video = encode_clip(clip_dir / "windows.mp4", frames=90, fps=30, options={"g": "12"}).read_bytes()
    plan = plan_windows(90, 30.0, 3.0, 8, 1.0, 0.25)
    ref = probe_and_decode(video, lambda n: [w.indices for w in plan])
    got: list[tuple[int, np.ndarray, list[float]]] = []
    out = decode_windows(video, lambda info: [w.indices for w in plan], lambda *a: got.append(a))
    assert [k for k, _, _ in got] == list(range(len(plan)))
    for (_, frames, stamps), clip, ts, window in zip(got, ref.clips, ref.timestamps_s, plan, strict=True):
        assert np.array_equal(frames, clip) and stamps == ts
        assert [read_index(f) for f in frames] == window.indices
    # every frame decoded and converted at most once, windows sharing frames included
    assert out.stats == ref.stats and out.stats["frames_decoded"] <= 90
    assert out.stats["frames_converted"] == len({i for w in plan for i in w.indices})
    assert out.clips == [] and out.timestamps_s == ref.timestamps_s


# ---------------------------------------------------------------------------- the route, tiny graphs
@pytest.fixture(scope="module")
def long_clip(clip_dir: Path) -> bytes:
    return encode_clip(clip_dir / "timeline.mp4", frames=96, fps=24).read_bytes()  # 4 s


def post(client, data: bytes, headers: dict | None = None, **params):
    return client.post(
        "/timeline", params=params, headers=headers or {}, files={"file": ("v.mp4", data, "video/mp4")}
    )


def test_timeline_json(app: InProcessServer, long_clip: bytes):
    with app.client() as client:
        r = post(client, long_clip, window_s=1.0, stride_s=0.5, top_k=2, frames=8)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_windows"] == len(body["windows"]) == 7
    assert body["window_s"] == 1.0 and body["stride_s"] == 0.5
    assert [(w["start_s"], w["end_s"]) for w in body["windows"]][:2] == [(0.0, 1.0), (0.5, 1.5)]
    first = body["windows"][0]
    assert len(first["predictions"]) == 2 and first["predictions"][0]["label"] in ("push", "pull", "spin")
    assert set(first["dependency_weights"]) == {"layer1", "layer2", "layer3", "layer4"}
    segs = body["segments"]
    assert segs and segs[0]["start_s"] == 0.0 and segs[-1]["end_s"] == pytest.approx(4.0)
    assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(segs))
    assert body["video"]["frames"] == 96 and body["model"]["frames"] == 8
    assert {"upload", "inference", "total"} <= set(body["timings_ms"])


def test_timeline_streams_one_line_per_window_then_the_summary(app: InProcessServer, long_clip: bytes):
    with app.client() as client:
        plain = post(client, long_clip, window_s=1.0).json()
        r = post(client, long_clip, NDJSON, window_s=1.0)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    *windows, last = lines
    assert [w["window"] for w in windows] == list(range(plain["num_windows"]))
    # the same windows and answers (scores to float tolerance: rows may be batched differently)
    for streamed, whole in zip(windows, plain["windows"], strict=True):
        assert (streamed["start_s"], streamed["end_s"]) == (whole["start_s"], whole["end_s"])
        assert [p["score"] for p in streamed["predictions"]] == pytest.approx(
            [p["score"] for p in whole["predictions"]], abs=1e-4
        )
    assert [s["label"] for s in last["segments"]] == [s["label"] for s in plain["segments"]]
    assert "video" in last and "windows" not in last


def test_timeline_defaults_and_errors(app: InProcessServer, long_clip: bytes):
    with app.client() as client:
        body = post(client, long_clip).json()
        assert body["window_s"] == 4.0 and body["stride_s"] == 2.0 and body["num_windows"] == 1
        assert post(client, long_clip, window_s=0.1).status_code == 422
        assert post(client, long_clip, smooth=2).status_code == 422
        assert post(client, long_clip, top_k=4).status_code == 422
        assert post(client, long_clip, model="nope").status_code == 404
        assert post(client, b"not a video at all").status_code == 415


@pytest.fixture(scope="module")
def tight(model_repo: Path) -> Iterator[InProcessServer]:
    with serve_in_process(
        model_repo, default_model="tiny-sda", max_timeline_windows=5, max_timeline_duration_s=3.0
    ) as server:
        yield server


def test_timeline_limits_are_422_naming_the_setting(tight: InProcessServer, clip_dir: Path):
    short = encode_clip(clip_dir / "timeline-short.mp4", frames=48, fps=24).read_bytes()  # 2 s
    long = encode_clip(clip_dir / "timeline-long.mp4", frames=96, fps=24).read_bytes()  # 4 s
    with tight.client() as client:
        r = post(client, long, window_s=1.0)
        assert r.status_code == 422 and "max_timeline_duration_s" in r.json()["detail"]
        r = post(client, short, NDJSON, window_s=0.5, stride_s=0.25)  # 7 windows: refused before streaming
        assert r.status_code == 422 and "max_timeline_windows" in r.json()["detail"]
        assert post(client, short, window_s=1.0).status_code == 200
        assert client.get("/health").status_code == 200


# ---------------------------------------------------------------------- the default model, known cuts
def test_default_model_timeline_finds_the_actions_of_a_synthetic_sequence():
    seq = render_sequence([0, 6, 3], np.random.default_rng(9), short_side=96, min_clip_s=3.5)
    video = encode_mp4(seq.frames, seq.fps)
    params = {"window_s": 2.0, "stride_s": 0.5, "smooth": 5}
    with serve_in_process(ROOT / "models") as server, server.client() as client:
        r = post(client, video, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    windows = [Window(w["start_s"], w["end_s"], []) for w in body["windows"]]
    inside = windows_inside(seq.spans(), windows)
    top1 = [body["windows"][k]["predictions"][0]["index"] == label for k, label in inside]
    print("window top-1 inside actions", sum(top1), "/", len(top1), "cuts", seq.cuts_s, body["segments"])
    assert len(inside) >= 9 and sum(top1) / len(top1) >= 0.8
    found = [
        type("S", (), {"start_s": s["start_s"], "end_s": s["end_s"], "label": s["index"]})()
        for s in body["segments"]
    ]
    errors = boundary_errors(seq.cuts_s, found, seq.duration_s)  # type: ignore[arg-type]
    assert statistics.median(errors) <= 0.75, errors
    assert segment_matches(seq.spans(), found) >= 2  # type: ignore[arg-type]


# ------------------------------------------------------------------ a real server: the client goes away
def _inferred(client) -> int:
    stats = client.get("/v2/models/tiny-sda/stats").json()["model_stats"]
    return sum(int(entry["inference_count"]) for entry in stats)


def test_a_client_that_leaves_the_stream_stops_the_work(model_repo: Path, clip_dir: Path, tmp_path: Path):
    video = encode_clip(
        clip_dir / "timeline-60s.mp4", frames=720, fps=12, pattern="noise"
    ).read_bytes()  # 60 s
    server = start_server(
        model_repo, tmp_path / "server.log", default_model="tiny-sda", max_batch_size=1, max_queue=1
    )
    try:
        _leave_the_stream(server, clip_dir, video)
    finally:
        server.stop()


def _leave_the_stream(server, clip_dir: Path, video: bytes) -> None:
    with server.client(timeout=60) as client:
        params = {"window_s": 0.5, "stride_s": 0.25, "frames": 8}  # 239 windows, one per batch
        files = {"file": ("v.mp4", video, "video/mp4")}
        with client.stream("POST", "/timeline", params=params, headers=NDJSON, files=files) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert json.loads(next(lines))["window"] == 0
        time.sleep(1.0)
        stopped = _inferred(client)
        time.sleep(1.0)
        print("windows inferred before the stop:", stopped)
        assert _inferred(client) == stopped < 239
        # the request's slot (max_queue=1) is free again
        small = encode_clip(clip_dir / "timeline-small.mp4", frames=16, fps=12).read_bytes()
        assert client.post("/classify", files={"file": ("s.mp4", small, "video/mp4")}).status_code == 200
