"""CI-sized fuzzing: mutated real videos at /classify (tests/fuzz.py) and schemathesis over the
OpenAPI schema. Pass: no 5xx, no dropped connection, every answer within the decode timeout (plus a
grace period), and the server healthy afterwards. The nightly-sized run is
``python -m tests.fuzz --inputs 2000``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import fuzz
import pytest

from service.testing import InProcessServer, ServerProcess, start_server
from service.thumbnails import thumbnail_size

CI_INPUTS = 600
DECODE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def fuzz_server(tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(
        tsn_only_repo,
        tmp_path_factory.mktemp("fuzz") / "server.log",
        decode_timeout_s=DECODE_TIMEOUT_S,
        max_queue=64,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return fuzz.make_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


def test_every_seed_is_a_real_video_the_service_classifies(app: InProcessServer, seeds):
    """The mutations start from files the service accepts (else the fuzzer only tests rejection)."""
    with app.client() as client:
        for name, data in seeds.items():
            response = client.post("/classify", content=data, headers={"content-type": "video/mp4"})
            if name == "no-frames.mp4":
                # FFmpeg drops an MP4 track without samples: "no video stream"
                assert response.status_code == 415 and "no video stream" in response.json()["detail"]
            else:
                assert response.status_code == 200, (name, response.text)


def test_the_mutations_change_their_inputs(seeds):
    """A splice of a file with itself or a header field patched to its own value can leave an input
    as it was; nearly all must differ."""
    inputs = fuzz.generate(seeds, 8 * len(seeds) * len(fuzz.MUTATIONS))
    for mutation in set(fuzz.MUTATIONS) - {"swapped_container"}:
        mine = [i for i in inputs if i.mutation == mutation]
        changed = sum(i.data != seeds[i.seed] for i in mine)
        assert mine and changed >= 0.9 * len(mine), (mutation, changed, len(mine))


def test_mutated_videos_never_get_a_5xx(fuzz_server: ServerProcess, seeds):
    inputs = fuzz.generate(seeds, CI_INPUTS, rng_seed=7)
    report = asyncio.run(
        fuzz.run_fuzz(fuzz_server.url, inputs, seeds["h264.mp4"], decode_timeout_s=DECODE_TIMEOUT_S)
    )
    print(report.summary())
    assert not report.failures, "\n".join(report.failures[:20]) + "\n" + fuzz_server.log()[-3000:]
    assert fuzz_server.process.poll() is None
    # both sides of the contract were exercised: some mutants still decode, most are refused
    assert report.statuses[200] > 0 and report.statuses[415] + report.statuses[422] > CI_INPUTS // 4


def test_a_65535_pixel_wide_video_is_refused_by_its_aspect_ratio(app: InProcessServer, seeds):
    """Found by the fuzzer: 65535x48 is legal under max_pixels but too wide for a JPEG (was a 500),
    and resized to the model's short side it is a frame hundreds of thousands of pixels wide
    (issue #21: +4 GB). It is now a 422 before anything is decoded (max_aspect_ratio); a server
    that raises that limit still gets thumbnails no wider than a JPEG allows."""
    wide = fuzz._patch_after(seeds["gif.gif"], b"GIF89a", 6, "<H", 65535)
    with app.client() as client:
        response = client.post(
            "/classify",
            params={"thumbnails": "true"},
            content=wide,
            headers={"content-type": "application/octet-stream"},
        )
    assert response.status_code == 422, response.text
    assert "max_aspect_ratio" in response.json()["detail"]
    width, height = thumbnail_size(65535, 48, 72)
    assert width <= 65500 and height >= 1
