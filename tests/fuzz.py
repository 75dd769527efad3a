"""Mutation fuzzer for ``POST /classify``: real videos, broken in the ways uploads break.

Seeds are real clips encoded with PyAV (H.264/MP4 both moov orders, VP9/WebM, VP8/MKV, MJPEG/AVI,
MPEG-4/MOV, HEVC/MKV, H.264/MPEG-TS, GIF). Each input is one seed through one mutation:
truncation, flipped bits, overwritten runs, spliced headers (the head of one file on the tail of
another), swapped containers (one container's bytes declared as another, or two files glued),
repeated chunks, zero-length streams, and absurd header fields (frame sizes up to 65535x65535,
10-hour durations, extreme integers in the first kilobytes).

Pass criteria (``FuzzReport.failures``): no 5xx, no dropped connection (a crashed worker), every
answer within the decode timeout plus a grace period, and afterwards ``/health`` ok and a good clip
still classified.

Nightly-style run (starts its own server on the embedded default model unless ``--url`` is given)::

    python -m tests.fuzz --inputs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx

from service.testing import ROOT, start_server

if __package__:  # python -m tests.fuzz
    from tests.clips import encode_clip
else:  # imported by pytest (tests/ on sys.path)
    from clips import encode_clip

CONTENT_TYPES = ("video/mp4", "video/webm", "video/x-matroska", "video/quicktime", "application/octet-stream")


# ------------------------------------------------------------------------------------------- seeds
def make_seeds(directory: Path) -> dict[str, bytes]:
    """Small real clips in many containers and codecs (16 frames, 64x48)."""
    directory.mkdir(parents=True, exist_ok=True)
    specs: dict[str, dict[str, object]] = {
        "h264.mp4": {},
        "h264-faststart.mp4": {"container_options": {"movflags": "faststart"}},
        "vp9.webm": {"codec": "libvpx-vp9"},
        "vp8.mkv": {"codec": "libvpx"},
        "mjpeg.avi": {"codec": "mjpeg", "pix_fmt": "yuvj420p"},
        "mpeg4.mov": {"codec": "mpeg4"},
        "hevc.mkv": {"codec": "libx265"},
        "h264.ts": {"container": "mpegts"},
        "h264-audio.mp4": {"audio": True},
        "gif.gif": {"codec": "gif", "container": "gif", "pix_fmt": "rgb8"},
    }
    seeds = {}
    for name, options in specs.items():
        path = encode_clip(directory / name, frames=16, **options)  # type: ignore[arg-type]
        seeds[name] = path.read_bytes()
    seeds["no-frames.mp4"] = _zero_frame_stream(directory / "no-frames.mp4")
    return seeds


def _zero_frame_stream(path: Path) -> bytes:
    """A container with a video stream that carries no packet at all."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=12)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    out.start_encoding()  # writes the header; no frame follows
    out.close()
    return path.read_bytes()


# --------------------------------------------------------------------------------------- mutations
Mutation = Callable[[random.Random, bytes, dict[str, bytes]], bytes]


def truncate(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    cut = rng.choice([rng.randrange(0, 64), rng.randrange(0, len(data))])
    return data[:cut]


def flip_bits(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    out = bytearray(data)
    # bias towards the first kilobytes, where the headers live
    span = len(out) if rng.random() < 0.5 else min(len(out), 2048)
    for bit in rng.sample(range(span * 8), rng.randint(1, 64)):  # distinct bits: no flip undone
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def overwrite_run(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    out = bytearray(data)
    start = rng.randrange(len(out))
    length = min(len(out) - start, rng.randint(1, 4096))
    fill = rng.choice([b"\x00", b"\xff", None])
    out[start : start + length] = fill * length if fill else rng.randbytes(length)
    if out[start : start + length] == data[start : start + length]:  # overwrote with what was there
        out[start] ^= 0xFF
    return bytes(out)


def splice_headers(rng: random.Random, data: bytes, seeds: dict[str, bytes]) -> bytes:
    other = rng.choice(list(seeds.values()))
    return data[: rng.randrange(8, min(len(data), 4096))] + other[rng.randrange(len(other)) :]


def glue_containers(rng: random.Random, data: bytes, seeds: dict[str, bytes]) -> bytes:
    return data + rng.choice(list(seeds.values()))


def repeat_chunk(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 512)]
    return data[:start] + chunk * rng.randint(2, 200) + data[start:]


def _patch_after(data: bytes, marker: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    position = out.find(marker)
    while position >= 0:
        at = position + offset
        if at + struct.calcsize(fmt) <= len(out):
            struct.pack_into(fmt, out, at, value)
        position = out.find(marker, position + 1)
    return bytes(out)


def absurd_header(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    """Frame sizes, durations and counts no real file has, at the fields that hold them."""
    big = rng.choice([16000, 16384, 32768, 65535])
    patches = [
        # MP4/MOV sample entry: width and height (uint16) 24 bytes after the codec fourcc
        (b"avc1", 24, ">H", big),
        (b"avc1", 26, ">H", big),
        (b"hvc1", 24, ">H", big),
        (b"mp4v", 24, ">H", big),
        (b"jpeg", 24, ">H", big),
        # tkhd width/height (16.16 fixed point) end the box; mvhd duration (v0) 16 bytes after 'mvhd'
        (b"mvhd", 16, ">I", rng.choice([36_000 * 1000, 0xFFFFFFFF, 0])),
        (b"mdhd", 16, ">I", rng.choice([36_000 * 12_800, 0xFFFFFFFF, 0])),
        (b"stsz", 12, ">I", rng.choice([0xFFFFFFFF, 1_000_000])),
        (b"stts", 8, ">I", rng.choice([0xFFFFFFFF, 1_000_000])),
        # JPEG SOF0: height, width (uint16) 3 and 5 bytes after the marker's length
        (b"\xff\xc0", 5, ">H", big),
        (b"\xff\xc0", 7, ">H", big),
        # AVI main header: total frames, width, height (little-endian) after 'avih'
        (b"avih", 24, "<I", rng.choice([1_000_000, 0xFFFFFFFF])),
        (b"avih", 40, "<I", big),
        (b"avih", 44, "<I", big),
        # GIF logical screen size
        (b"GIF89a", 6, "<H", big),
        (b"GIF89a", 8, "<H", big),
    ]
    out = data
    for marker, offset, fmt, value in rng.sample(patches, rng.randint(1, 4)):
        out = _patch_after(out, marker, offset, fmt, value)
    if out == data:  # no such field in this container: extreme integers somewhere in the head
        mutable = bytearray(out)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(max(1, min(len(mutable) - 4, 1024)))
            struct.pack_into(">I", mutable, at, rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000]))
        out = bytes(mutable)
    return out


def zero_length(rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    return rng.choice([b"", data[:1], b"\x00" * rng.randint(1, 4096)])


def unchanged(_rng: random.Random, data: bytes, _seeds: dict[str, bytes]) -> bytes:
    return data  # swapped containers: sent as-is under another container's content type


MUTATIONS: dict[str, Mutation] = {
    "truncate": truncate,
    "flip_bits": flip_bits,
    "overwrite_run": overwrite_run,
    "splice_headers": splice_headers,
    "glue_containers": glue_containers,
    "repeat_chunk": repeat_chunk,
    "absurd_header": absurd_header,
    "zero_length": zero_length,
    "swapped_container": unchanged,
}


@dataclass(frozen=True)
class FuzzInput:
    seed: str
    mutation: str
    data: bytes
    content_type: str
    multipart: bool
    thumbnails: bool  # ?thumbnails=true: JPEG thumbnails of the sampled frames come back too


def generate(seeds: dict[str, bytes], count: int, rng_seed: int = 0) -> list[FuzzInput]:
    rng = random.Random(rng_seed)
    names = sorted(seeds)
    inputs = []
    for i in range(count):
        seed = names[i % len(names)]
        mutation = list(MUTATIONS)[(i // len(names)) % len(MUTATIONS)]
        data = MUTATIONS[mutation](rng, seeds[seed], seeds)
        inputs.append(
            FuzzInput(seed, mutation, data, rng.choice(CONTENT_TYPES), rng.random() < 0.5, rng.random() < 0.5)
        )
    return inputs


# ------------------------------------------------------------------------------------------ running
@dataclass
class FuzzReport:
    inputs: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx
    dropped: list[str] = field(default_factory=list)  # no answer at all
    slow: list[str] = field(default_factory=list)  # answered after the decode timeout + grace
    max_latency_s: float = 0.0
    slowest: str = ""
    seconds: float = 0.0
    healthy_after: bool = False

    @property
    def failures(self) -> list[str]:
        problems = [*self.server_errors, *self.dropped, *self.slow]
        if not self.healthy_after:
            problems.append("the service was not healthy afterwards")
        return problems

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{self.inputs} inputs in {self.seconds:.1f} s; statuses {{{codes}}}; "
            f"5xx {len(self.server_errors)}; dropped {len(self.dropped)}; "
            f"max latency {self.max_latency_s:.2f} s ({self.slowest}); "
            f"healthy afterwards: {self.healthy_after}"
        )


async def _send(client: httpx.AsyncClient, item: FuzzInput) -> httpx.Response:
    params = {"thumbnails": "true"} if item.thumbnails else {}
    if item.multipart:
        files = {"file": (f"upload.{item.seed.rsplit('.', 1)[-1]}", item.data, item.content_type)}
        return await client.post("/classify", params=params, files=files)
    headers = {"content-type": item.content_type}
    return await client.post("/classify", params=params, content=item.data, headers=headers)


async def run_fuzz(
    url: str,
    inputs: list[FuzzInput],
    good_clip: bytes,
    *,
    decode_timeout_s: float,
    grace_s: float = 15.0,
    concurrency: int = 4,
    headers: dict[str, str] | None = None,
) -> FuzzReport:
    report = FuzzReport(inputs=len(inputs))
    limit = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(decode_timeout_s + grace_s + 30.0)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers or {}) as client:

        async def one(index: int, item: FuzzInput) -> None:
            label = f"#{index} {item.mutation}({item.seed}) {len(item.data)} B as {item.content_type}"
            async with limit:
                started = time.perf_counter()
                try:
                    response = await _send(client, item)
                except httpx.HTTPError as error:
                    report.dropped.append(f"{label}: {type(error).__name__}: {error}")
                    return
                latency = time.perf_counter() - started
            if latency > report.max_latency_s:
                report.max_latency_s, report.slowest = latency, f"{label} -> {response.status_code}"
            report.statuses[response.status_code] += 1
            if response.status_code >= 500:
                report.server_errors.append(f"{label}: {response.status_code} {response.text[:200]}")
            if latency > decode_timeout_s + grace_s:
                report.slow.append(f"{label}: {latency:.1f} s")

        started = time.perf_counter()
        await asyncio.gather(*(one(i, item) for i, item in enumerate(inputs)))
        report.seconds = time.perf_counter() - started
        health = await client.get("/health")
        good = await client.post("/classify", content=good_clip, headers={"content-type": "video/mp4"})
        report.healthy_after = (
            health.status_code == 200 and health.json()["status"] == "ok" and good.status_code == 200
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2000, help="inputs per round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (new mutations each); RSS after each")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    parser.add_argument("--url", help="fuzz a running server instead of starting one")
    parser.add_argument("--models", default=str(ROOT / "models"), help="repository for the started server")
    parser.add_argument("--decode-timeout-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sda-fuzz-") as tmp:
        work = Path(tmp)
        seeds = make_seeds(work / "seeds")
        server = None
        url = args.url
        if url is None:
            server = start_server(
                Path(args.models), work / "server.log", decode_timeout_s=args.decode_timeout_s
            )
            url = server.url
        try:
            if server is not None:
                print(f"server RSS at start {_rss_mib(server.process.pid):.0f} MiB")
            for round_ in range(args.rounds):
                inputs = generate(seeds, args.inputs, args.seed + round_)
                report = asyncio.run(
                    run_fuzz(
                        url,
                        inputs,
                        seeds["h264.mp4"],
                        decode_timeout_s=args.decode_timeout_s,
                        concurrency=args.concurrency,
                    )
                )
                rss = f"; server RSS {_rss_mib(server.process.pid):.0f} MiB" if server else ""
                print(f"round {round_ + 1}: {report.summary()}{rss}", flush=True)
                failures += report.failures
        finally:
            if server is not None:
                server.stop()
    by_mutation = Counter(item.mutation for item in inputs)
    print("inputs per mutation (last round):", dict(sorted(by_mutation.items())))
    for problem in failures[:20]:
        print("FAIL", problem)
    return 1 if failures else 0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
