"""Decode + sample section: the service's sampler (``videocore.decode.probe_and_decode``) against decoding
every frame to RGB, on clips the benchmark encodes itself with PyAV, with the lower bound beside it.

Both sides use the same decoder with FFmpeg's frame/slice threads (``thread_type="AUTO"``), so the
ratio is the sampler's doing, not threading's.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.stats import summarise, time_repeats
from videocore.decode import VideoLimits, probe_and_decode
from videocore.sampling import index_chooser


@dataclass(frozen=True)
class ClipSpec:
    name: str
    description: str
    container: str
    codec: str
    width: int
    height: int
    seconds: float
    fps: int
    options: dict[str, str]


CLIPS = (
    ClipSpec(
        "h264-720p-10s-sparse-keyframes", "H.264 1280×720 30 fps 10 s, one keyframe (keyint 600)",
        "mp4", "libx264", 1280, 720, 10, 30,
        {"preset": "veryfast", "crf": "23", "x264-params": "keyint=600:min-keyint=600:scenecut=0"},
    ),
    ClipSpec(
        "h264-1080p-60s-default-gop", "H.264 1920×1080 30 fps 60 s, x264's default GOP (keyint 250)",
        "mp4", "libx264", 1920, 1080, 60, 30, {"preset": "veryfast", "crf": "23"},
    ),
    ClipSpec(
        "vp9-webm-480p-10s", "VP9 WebM 854×480 30 fps 10 s, libvpx's default GOP",
        "webm", "libvpx-vp9", 854, 480, 10, 30, {"deadline": "realtime", "cpu-used": "8"},
    ),
)  # fmt: skip
SMOKE_CLIPS = (
    ClipSpec("h264-320p-2s-smoke", "H.264 480×320 30 fps 2 s (smoke)", "mp4", "libx264", 480, 320, 2, 30,
             {"preset": "ultrafast"}),
    ClipSpec("vp9-webm-240p-2s-smoke", "VP9 WebM 426×240 2 s (smoke)", "webm", "libvpx-vp9", 426, 240, 2,
             30, {"deadline": "realtime", "cpu-used": "8"}),
)  # fmt: skip


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field twice the frame width (panned over time), cheap to make at 1080p."""
    coarse = rng.integers(0, 256, (height // 60 + 2, width // 30 + 2, 3)).astype(np.float32)
    rows = np.linspace(0, coarse.shape[0] - 1, height)
    cols = np.linspace(0, coarse.shape[1] - 1, 2 * width)
    r0, c0 = rows.astype(int), cols.astype(int)
    r1, c1 = np.minimum(r0 + 1, coarse.shape[0] - 1), np.minimum(c0 + 1, coarse.shape[1] - 1)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c1] * fc
    bottom = coarse[r1][:, c0] * (1 - fc) + coarse[r1][:, c1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.uint8)


def encode(spec: ClipSpec, path: Path) -> Path:
    """A panning textured background with a moving box: real motion for the codec, cheap to encode
    (per-frame noise made the 60 s 1080p clip take most of an hour to encode on 2 shared cores)."""
    rng = np.random.default_rng(0)
    texture = _texture(spec.height, spec.width, rng)
    box = max(16, spec.height // 6)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with av.open(str(staging), "w", format=spec.container) as out:
        stream = out.add_stream(spec.codec, rate=Fraction(spec.fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = dict(spec.options)
        count = int(spec.seconds * spec.fps)
        for index in range(count):
            shift = (index * 7) % spec.width
            frame = texture[:, shift : shift + spec.width].copy()
            x = int((spec.width - box) * (0.5 + 0.45 * np.sin(index / 20)))
            y = int((spec.height - box) * (0.5 + 0.45 * np.cos(index / 27)))
            frame[y : y + box, x : x + box] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    staging.replace(path)
    return path


def decode_all_rgb(data: bytes) -> list[np.ndarray]:
    """The naive way: every frame to full-size RGB (the sampled ones are picked afterwards)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def decode_only(data: bytes) -> int:
    """Every frame decoded, none converted: the per-frame cost of the decoder alone."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def keyframe_ranks(data: bytes) -> tuple[int, list[int]]:
    """Frame count and the presentation ranks of the keyframes (demux only, no decoding)."""
    with av.open(io.BytesIO(data)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.pts is not None and p.size]
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    rank = {index: position for position, index in enumerate(order)}
    return len(packets), sorted(rank[i] for i, (_, key) in enumerate(packets) if key)


def frames_needed(indices: list[int], keyframes: list[int]) -> int:
    """Frames a decoder must decode to output ``indices``: from each one's keyframe up to it, merged."""
    needed: set[int] = set()
    for index in indices:
        start = max([k for k in keyframes if k <= index], default=0)
        needed.update(range(start, index + 1))
    return len(needed)


def measure_clip(
    spec: ClipSpec, path: Path, frames: int, short_side: int, budget_s: float, log: Callable[[str], None]
) -> dict[str, object]:
    data = path.read_bytes()
    chooser = index_chooser(frames, 1)
    limits = VideoLimits(max_bytes=len(data) + 1, timeout_s=600)  # default max_pixels (see the README)
    decoded = probe_and_decode(data, chooser, limits, resize_short_side=short_side)
    indices = decoded.indices[0]
    # The call above warmed the decoder libraries and the file is in memory: no extra warm-up runs.
    ours = time_repeats(
        lambda: probe_and_decode(data, chooser, limits, resize_short_side=short_side),
        min_repeats=3, max_repeats=10, budget_s=budget_s, warmup=0,
    )  # fmt: skip
    naive = time_repeats(
        lambda: decode_all_rgb(data), min_repeats=3, max_repeats=10, budget_s=budget_s, warmup=0
    )
    decoder = time_repeats(
        lambda: decode_only(data), min_repeats=3, max_repeats=10, budget_s=budget_s, warmup=0
    )
    total, keyframes = keyframe_ranks(data)
    needed = frames_needed(indices, keyframes)
    lower_ms = decoder.median * 1000.0 / max(total, 1) * needed
    result = {
        "clip": spec.name,
        "description": spec.description,
        "bytes": len(data),
        "frames": total,
        "keyframes": len(keyframes),
        "sampled": frames,
        "ours_ms": ours.scaled(1000).to_dict(1),
        "decode_all_rgb_ms": naive.scaled(1000).to_dict(1),
        "speedup": round(naive.median / ours.median, 2),
        "decode_only_all_frames_ms": decoder.scaled(1000).to_dict(1),
        "frames_decoded_by_ours": decoded.stats.get("frames_decoded"),
        "frames_needed": needed,
        "lower_bound_ms": round(lower_ms, 1),
        "lower_bound_rule": "frames needed (each sample's keyframe up to it) x measured decode-only ms/frame",
    }
    log(
        f"    {spec.name}: ours {ours.median * 1000:.0f} ms, decode-all-RGB {naive.median * 1000:.0f} ms "
        f"({result['speedup']}x), lower bound {lower_ms:.0f} ms"
    )
    return result


# ------------------------------------------------------------------------------ decode policy ratios
# Clips on which the decoder's policy (threads, skipping unsampled non-reference frames) is measured:
# x264's defaults (adaptive B-frames, B-pyramid), the same clip trimmed mid-GOP without re-encoding
# (an edit list, as phones and ``ffmpeg -ss -c copy`` write), VP9 (no non-reference frames to skip)
# and, cheap to encode at ultrafast, a short 4K HEVC clip.
POLICY_CLIPS = (
    ClipSpec(
        "h264-720p-10s-bframes", "H.264 1280×720 30 fps 10 s, x264 veryfast defaults (B-frames, keyint 250)",
        "mp4", "libx264", 1280, 720, 10, 30, {"preset": "veryfast", "crf": "23"},
    ),
    ClipSpec(
        "vp9-webm-480p-10s", "VP9 WebM 854×480 30 fps 10 s, libvpx's default GOP",
        "webm", "libvpx-vp9", 854, 480, 10, 30, {"deadline": "realtime", "cpu-used": "8"},
    ),
    ClipSpec(
        "hevc-4k-3s", "HEVC 3840×2160 30 fps 3 s, x265 ultrafast (B-frames)",
        "mp4", "libx265", 3840, 2160, 3, 30, {"preset": "ultrafast", "x265-params": "log-level=none"},
    ),
)  # fmt: skip
TRIM_CUT_S = 1.3  # the trimmed clip starts here, mid-GOP


@dataclass(frozen=True)
class Policy:
    name: str
    threads: int | None  # None: FFmpeg's default (one frame thread per CPU)
    skip_unsampled: bool


def policies(decode_workers: int = 2) -> tuple[Policy, ...]:
    """The old behaviour first (the ratios' denominator), the service's policy last."""
    from videocore.decode import threads_per_decode

    threads = threads_per_decode(decode_workers)
    return (
        Policy("before: FFmpeg threads, no skip", None, False),
        Policy("skip only", None, True),
        Policy(f"threads={threads} only", threads, False),
        Policy(f"after: threads={threads} + skip", threads, True),
    )


def trim_copy(src: Path, dst: Path, cut_s: float) -> Path:
    """``ffmpeg -ss cut_s -i src -c copy dst`` with PyAV: packets from the keyframe before the cut,
    timestamps shifted so the cut is 0; the mp4 muxer writes the edit list that hides the rest."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        cut = round(cut_s / ist.time_base)
        cut_pts = min((p.pts for p in packets if p.pts >= cut), default=packets[-1].pts)
        key_pts = max(p.pts for p in packets if p.is_keyframe and p.pts <= cut_pts)
        start = next(i for i, p in enumerate(packets) if p.pts == key_pts)
        for packet in packets[start:]:
            packet.pts -= cut_pts
            packet.dts -= cut_pts
            packet.stream = ost
            out.mux(packet)
    return dst


def _cpu_and_wall(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure_policies(
    path: Path, frames: int, repeats: int, decode_workers: int = 2
) -> list[dict[str, object]]:
    """CPU seconds (all threads of the process) and wall seconds per decode of ``frames`` sampled
    frames, for each policy; the policies are interleaved repeat by repeat so that load from other
    processes falls on all of them alike. Ratios are against the first policy."""
    data = path.read_bytes()
    chooser = index_chooser(frames, 1)
    limits = VideoLimits(max_bytes=len(data) + 1, timeout_s=600)
    runs = policies(decode_workers)

    def call(policy: Policy):
        return probe_and_decode(
            data, chooser, limits, resize_short_side=256, threads=policy.threads,
            skip_unsampled=policy.skip_unsampled,
        )  # fmt: skip

    decoded = [call(p) for p in runs]  # warm-up, and the pixels must agree
    for other in decoded[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(decoded[0].clips, other.clips, strict=True))
    samples: list[list[tuple[float, float]]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, policy in enumerate(runs):
            samples[i].append(_cpu_and_wall(lambda policy=policy: call(policy)))
    cpu = [summarise([c for c, _ in s]) for s in samples]
    wall = [summarise([w for _, w in s]) for s in samples]
    return [
        {
            "policy": policy.name,
            "frames_decoded": d.stats["frames_decoded"],
            "frames_counted": d.stats["packets"],
            "cpu_ms": cpu[i].scaled(1000).to_dict(1),
            "wall_ms": wall[i].scaled(1000).to_dict(1),
            "cpu_ratio": round(cpu[i].median / cpu[0].median, 2),
            "wall_ratio": round(wall[i].median / wall[0].median, 2),
        }
        for i, (policy, d) in enumerate(zip(runs, decoded, strict=True))
    ]


def policy_table(cache: Path, repeats: int, log: Callable[[str], None]) -> list[dict[str, object]]:
    """Encode (cached) the policy clips and the trimmed one, measure every policy at 8 and 16 frames."""
    clips: list[tuple[str, Path]] = []
    for spec in POLICY_CLIPS:
        path = cache / "clips" / f"{spec.name}.{spec.container}"
        if not path.is_file():
            log(f"  encoding {spec.description} -> {path}")
            encode(spec, path)
        clips.append((spec.name, path))
        if spec.name.startswith("h264"):
            trimmed = path.with_name(f"{spec.name}-trimmed.mp4")
            if not trimmed.is_file():
                trim_copy(path, trimmed, TRIM_CUT_S)
            clips.append((f"{spec.name} trimmed at {TRIM_CUT_S} s (edit list)", trimmed))
    rows = []
    for name, path in clips:
        for frames in (8, 16):
            for row in measure_policies(path, frames, repeats):
                rows.append({"clip": name, "frames": frames, **row})
                log(
                    f"  {name} T={frames} {row['policy']:<34} decoded {row['frames_decoded']:>4}/"
                    f"{row['frames_counted']:<4} cpu {row['cpu_ms']['median']:>7.1f} ms "
                    f"({row['cpu_ratio']:.2f}x)  wall {row['wall_ms']['median']:>7.1f} ms "
                    f"({row['wall_ratio']:.2f}x)"
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.decode [--repeats N] [--cache DIR] [--json FILE]``: the policy ratio table."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=main.__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = policy_table(args.cache, args.repeats, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
