"""A crowd of hostile clients against a real server whose limits are all at their defaults (the
embedded default model, tests' CPU settings): 64 stalled or dribbling uploads beside normal /classify
requests (their p50 against an idle server's), then 10,000 requests with random methods and paths
(the size of /metrics after them).

    python -m tests.crowd
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import string
import tempfile
import threading
import time
from pathlib import Path

import httpx

from service.testing import ServerProcess, start_server
from tests.clips import encode_clip

ROOT = Path(__file__).resolve().parents[1]
HEADERS = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 500000\r\n\r\n"
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO", "BREW", "X" * 50]


def normal_latencies(server: ServerProcess, clip: bytes, n: int = 15) -> list[float]:
    out = []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(n):
            started = time.perf_counter()
            response = client.post("/classify?frames=8", content=clip, headers={"content-type": "video/mp4"})
            assert response.status_code == 200, response.text
            out.append(time.perf_counter() - started)
    return out


def crowd(server: ServerProcess, clip: bytes, connections: int = 64) -> None:
    """Half the connections stall after 1 KB, half dribble 100 bytes a second."""
    host, port = server.url.removeprefix("http://").split(":")
    idle = normal_latencies(server, clip)
    socks = [socket.create_connection((host, int(port))) for _ in range(connections)]
    for sock in socks:
        sock.sendall(HEADERS + b"\0" * 1024)
    started = time.monotonic()
    stop = threading.Event()

    def dribble() -> None:
        while not stop.is_set():
            for sock in socks[connections // 2 :]:
                with contextlib.suppress(OSError):
                    sock.sendall(b"\0" * 100)
            time.sleep(1)

    threading.Thread(target=dribble, daemon=True).start()
    loaded = normal_latencies(server, clip)
    answers: dict[str, list[float]] = {}
    for sock in socks:
        sock.settimeout(60)
        try:
            status = sock.recv(200).split(b"\r\n")[0].decode(errors="replace")
        except OSError as error:
            status = f"error {error}"
        answers.setdefault(status, []).append(round(time.monotonic() - started, 1))
    stop.set()
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(
        f"idle p50 {statistics.median(idle) * 1000:.0f} ms; beside {connections} stalled/dribbling uploads "
        f"p50 {statistics.median(loaded) * 1000:.0f} ms (ratio {ratio:.2f})"
    )
    for status, times in answers.items():
        print(f"  the slow uploads: {status!r} x{len(times)}, answered after {min(times)}-{max(times)} s")


async def flood(server: ServerProcess, requests: int = 10_000) -> dict[object, int]:
    codes: dict[object, int] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        gate = asyncio.Semaphore(32)

        async def one() -> None:
            path = "/" + "".join(random.choices(string.ascii_letters, k=random.randint(1, 200)))
            async with gate:
                try:
                    key: object = (await client.request(random.choice(METHODS), path)).status_code
                except httpx.HTTPError as error:
                    key = type(error).__name__
                codes[key] = codes.get(key, 0) + 1

        await asyncio.gather(*(one() for _ in range(requests)))
    return codes


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sda-crowd-"))
    clip = encode_clip(work / "clip.mp4", width=160, height=120, frames=48).read_bytes()
    server = start_server(ROOT / "models", work / "server.log")
    try:
        normal_latencies(server, clip, 3)  # warm
        crowd(server, clip)
        codes = asyncio.run(flood(server))
        metrics = httpx.get(f"{server.url}/metrics")
        started = time.perf_counter()
        health = httpx.get(f"{server.url}/health")
        health_ms = (time.perf_counter() - started) * 1000
        print(
            f"10,000 random method/path requests: {codes}; /metrics {len(metrics.content) / 1024:.1f} KiB; "
            f"/health {health.status_code} in {health_ms:.0f} ms"
        )
        log = server.log()
        print(f"500s in the server log: {log.count(' 500 ')}, tracebacks: {log.count('Traceback')}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
