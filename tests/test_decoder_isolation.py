"""A video that takes far longer to decode than the decode timeout costs the timeout and no more:
it is answered 422 at the deadline, other requests are served meanwhile, and no decoding goes on
after the answer (the decode thread stops itself; nothing is left burning CPU)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from clips import encode_clip

from service.testing import ServerProcess, start_server

DECODE_TIMEOUT_S = 0.25
GRACE_S = 10.0


def slow_to_decode(path: Path, frames: int = 900) -> bytes:
    """720p H.264 with a single keyframe: sampling 8 frames means decoding nearly all of them
    (~0.6 s here, several times the timeout), while the file is only ~30 kB."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "51", "g": "100000"})
    stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    for i in range(frames):
        frame.pts, frame.time_base = i, Fraction(1, 30)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path.read_bytes()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks of 1/100 s


@pytest.fixture(scope="module")
def isolated(tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(
        tsn_only_repo,
        tmp_path_factory.mktemp("isolation") / "server.log",
        decode_timeout_s=DECODE_TIMEOUT_S,
        decode_workers=2,
    )
    yield server
    server.stop()


def post(server: ServerProcess, data: bytes) -> tuple[int, str, float]:
    started = time.perf_counter()
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        response = client.post("/classify", content=data, headers={"content-type": "video/mp4"})
    return response.status_code, response.text, time.perf_counter() - started


def test_slow_decode_is_cut_at_the_timeout_while_others_are_served(isolated: ServerProcess, tmp_path: Path):
    slow = slow_to_decode(tmp_path / "slow.mp4")
    good = encode_clip(tmp_path / "good.mp4", frames=16).read_bytes()
    with ThreadPoolExecutor(4) as pool:
        slow_future = pool.submit(post, isolated, slow)
        time.sleep(0.05)
        good_results = [post(isolated, good) for _ in range(3)]  # one decode worker is still free
        status, text, latency = slow_future.result()
    assert status == 422 and "decoding took longer than" in text, text
    assert latency < DECODE_TIMEOUT_S + GRACE_S
    assert [s for s, _, _ in good_results] == [200, 200, 200], good_results
    print(f"slow video answered in {latency:.2f} s; good ones meanwhile in "
          f"{', '.join(f'{t:.2f}' for _, _, t in good_results)} s")  # fmt: skip

    # after its answer the server is idle: the abandoned decode is not still running
    time.sleep(0.2)
    before = cpu_seconds(isolated.process.pid)
    time.sleep(1.5)
    used = cpu_seconds(isolated.process.pid) - before
    print(f"server CPU in the 1.5 s after the answer: {used:.2f} s")
    assert used < 0.5, f"{used:.2f} CPU seconds used by an idle server: a decode kept running"


def test_the_slow_video_decodes_with_a_generous_timeout(tmp_path: Path):
    """The file is valid (the 422 above is the timeout, not a broken file)."""
    from videocore.decode import VideoLimits, probe_and_decode
    from videocore.sampling import index_chooser

    data = slow_to_decode(tmp_path / "slow.mp4")
    started = time.perf_counter()
    decoded = probe_and_decode(data, index_chooser(8, 1), VideoLimits(timeout_s=120), resize_short_side=64)
    took = time.perf_counter() - started
    print(f"full decode of the slow video: {took:.2f} s, {decoded.stats}")
    assert decoded.info.frames == 900 and decoded.stats["frames_decoded"] > 800
