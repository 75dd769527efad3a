"""Benchmark: what pathological videos cost the decoder (``videocore.decode.probe_and_decode`` in a
thread, as the service runs it), and what a process boundary around decoding would cost per request.

Cases: a real 16000x16000 H.264 frame, a 10-hour duration in the MP4 header, 200,000 tiny frames,
and a zip-bomb-like 120 kB file (3840x2160, 3000 frames, one keyframe) whose decoding never ends
within the timeout. For each: wall time, CPU time, peak RSS growth of this process, the answer.
Then: the median latency of decoding a small clip in the calling thread vs in a worker process
(bytes sent, tensor returned), i.e. the overhead a killable process boundary would add::

    python -m tests.pathological [--timeout-s 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import struct
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videocore.decode import VideoLimits, probe_and_decode
from videocore.errors import VideoError
from videocore.sampling import index_chooser

if __package__:
    from tests.clips import encode_clip
else:
    from clips import encode_clip


def _encode_black(
    path: Path, width: int, height: int, frames: int, rate: int, codec: str = "libx264"
) -> bytes:
    out = av.open(str(path), "w")
    options = {"preset": "ultrafast", "crf": "51", "g": "100000"} if codec == "libx264" else {}
    stream = out.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.zeros((height * 3 // 2, width), np.uint8), format="yuv420p")
    for i in range(frames):
        frame.pts, frame.time_base = i, 1 / Fraction(rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path.read_bytes()


def ten_hour_header(clip: bytes) -> bytes:
    """Movie and media durations set to 10 hours (mvhd/mdhd version 0: duration 16 bytes in)."""
    out = bytearray(clip)
    for box in (b"mvhd", b"mdhd"):
        at = out.find(box)
        timescale = struct.unpack_from(">I", out, at + 16)[0]
        struct.pack_into(">I", out, at + 20, 36_000 * timescale)
    return bytes(out)


def cases(directory: Path) -> dict[str, bytes]:
    small = encode_clip(directory / "small.mp4", frames=24).read_bytes()
    return {
        "16000x16000 H.264 frame": _encode_black(directory / "huge.mp4", 16000, 16000, 1, 30),
        "10-hour duration in the MP4 header (2 s of frames)": ten_hour_header(small),
        "10-hour video (60 frames, one per 10 min)": _encode_black(
            directory / "long.mp4", 64, 48, 60, Fraction(1, 600)
        ),
        "200,000 tiny frames (16x16 MPEG-4)": _encode_black(
            directory / "many.mp4", 16, 16, 200_000, 1000, "mpeg4"
        ),
        "3840x2160 x 3000 frames, one keyframe": _encode_black(directory / "bomb.mp4", 3840, 2160, 3000, 30),
    }


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(data: bytes, limits: VideoLimits) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS growth MiB, answer) of one decode in a worker thread."""
    peak, base, done = [0.0], _rss_mib(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib() - base)
            time.sleep(0.005)

    answer: list[str] = []

    def decode() -> None:
        try:
            probe_and_decode(data, index_chooser(8, 1), limits, resize_short_side=64)
            answer.append("decoded")
        except VideoError as error:
            answer.append(f"{error.status_code}: {error.message}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    wall, cpu = time.perf_counter(), time.process_time()
    worker = threading.Thread(target=decode)
    worker.start()
    worker.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    watcher.join()
    return wall, cpu, peak[0], answer[0]


def _decode_small(data: bytes) -> np.ndarray:
    decoded = probe_and_decode(data, index_chooser(8, 1), VideoLimits(), resize_short_side=64)
    return np.stack(decoded.clips)


def process_overhead(clip: bytes, runs: int = 30) -> tuple[float, float]:
    """Median ms per small-clip decode: in this thread, and in a warm forkserver worker process."""
    in_thread = []
    for _ in range(runs):
        started = time.perf_counter()
        _decode_small(clip)
        in_thread.append((time.perf_counter() - started) * 1000)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(_decode_small, clip).result()  # start and warm the worker
        in_process = []
        for _ in range(runs):
            started = time.perf_counter()
            pool.submit(_decode_small, clip).result()
            in_process.append((time.perf_counter() - started) * 1000)
    return statistics.median(in_thread), statistics.median(in_process)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.pathological", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    limits = VideoLimits(
        max_bytes=100 * 1024 * 1024,
        max_pixels=3840 * 2160,
        max_duration_s=600,
        max_decoded_frames=20_000,
        timeout_s=args.timeout_s,
    )  # the service's defaults (service/core/config.py), timeout from the command line
    with tempfile.TemporaryDirectory(prefix="sda-patho-") as tmp:
        print(f"decode timeout {args.timeout_s:g} s")
        print("| case | size | wall s | CPU s | peak RSS growth MiB | answer |")
        print("|---|---|---|---|---|---|")
        for name, data in cases(Path(tmp)).items():
            wall, cpu, rss, answer = measure(data, limits)
            print(f"| {name} | {len(data):,} B | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {answer[:90]} |")
        clip = encode_clip(Path(tmp) / "clip.mp4", width=320, height=240, frames=48).read_bytes()
        thread_ms, process_ms = process_overhead(clip)
        print(
            f"small clip (320x240, 48 frames, 8 sampled): {thread_ms:.1f} ms in a thread, "
            f"{process_ms:.1f} ms through a worker process (+{process_ms - thread_ms:.1f} ms)"
        )


if __name__ == "__main__":
    main()
