"""Bounded load test on loopback: N asyncio clients post a real clip to /classify for S seconds.

Reports requests, 200s, 503s (each must carry Retry-After), other statuses, p50/p99 latency of the
admitted (200) requests, the largest in-flight count /health reported (the queue bound), and the
server's RSS before and after. Starts its own server on the embedded default model unless ``--url``::

    python -m tests.load --clients 64 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.testing import ROOT, start_server

if __package__:
    from tests.clips import encode_clip
else:
    from clips import encode_clip


@dataclass
class LoadReport:
    clients: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    latencies_ok_s: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)  # transport errors (no answer)
    max_in_flight: int = 0
    max_queue: int = 0

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_ok_s)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    def summary(self) -> str:
        total = sum(self.statuses.values())
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(self.statuses.items()))
        return (
            f"{self.clients} clients x {self.seconds:.0f} s: {total} requests {{{codes}}}, "
            f"{len(self.errors)} transport errors, 503 without Retry-After: {self.missing_retry_after}; "
            f"admitted p50 {self.percentile(50) * 1000:.0f} ms, p99 {self.percentile(99) * 1000:.0f} ms; "
            f"max in flight {self.max_in_flight} (max_queue {self.max_queue})"
        )


async def run_load(url: str, clip: bytes, clients: int, seconds: float) -> LoadReport:
    report = LoadReport(clients, seconds)
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as client:

        async def one_client() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    response = await client.post(
                        "/classify", content=clip, headers={"content-type": "video/mp4"}
                    )
                except httpx.HTTPError as error:
                    report.errors.append(f"{type(error).__name__}: {error}")
                    continue
                report.statuses[response.status_code] += 1
                if response.status_code == 200:
                    report.latencies_ok_s.append(time.perf_counter() - started)
                elif response.status_code == 503:
                    if not response.headers.get("retry-after", "").isdigit():
                        report.missing_retry_after += 1
                    # a well-behaved client honours Retry-After, shortened so the test stays short
                    await asyncio.sleep(0.05)

        async def watch() -> None:
            while time.monotonic() < end:
                health = (await client.get("/health")).json()
                report.max_in_flight = max(report.max_in_flight, health["in_flight"])
                report.max_queue = health["max_queue"]
                await asyncio.sleep(0.1)

        await asyncio.gather(watch(), *(one_client() for _ in range(clients)))
    return report


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--url", help="load a running server instead of starting one")
    parser.add_argument("--models", default=str(ROOT / "models"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sda-load-") as tmp:
        clip = encode_clip(Path(tmp) / "clip.mp4", width=160, height=120, frames=48).read_bytes()
        server = None if args.url else start_server(Path(args.models), Path(tmp) / "server.log")
        url = args.url or server.url  # type: ignore[union-attr]
        try:
            # warm the allocator with one short round first, so "before" is a steady state
            asyncio.run(run_load(url, clip, 4, 3.0))
            before = rss_mib(server.process.pid) if server else None
            report = asyncio.run(run_load(url, clip, args.clients, args.seconds))
            after = rss_mib(server.process.pid) if server else None
            healthy = httpx.get(f"{url}/health", timeout=10).json()
        finally:
            if server is not None:
                server.stop()
    print(report.summary())
    for error in report.errors[:5]:
        print("transport error:", error)
    if before is not None:
        print(f"server RSS {before:.0f} MiB before, {after:.0f} MiB after; health afterwards: {healthy}")
    bad = report.errors or report.missing_retry_after or set(report.statuses) - {200, 503}
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
