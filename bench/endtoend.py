"""End-to-end section: real uvicorn servers on 127.0.0.1 (ours: ``python -m service``; the naive
baseline: ``python -m bench.naive``; both started by ``service.testing``, the tests' harness), driven
by an asyncio httpx client at several concurrencies;
latency percentiles and clips/s, the service's own stage timings, memory (RSS) and a py-spy profile."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from service.testing import ServerProcess, server_env, start_process


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_ours(models: Path, log_path: Path) -> ServerProcess:
    """The service as ``make run`` starts it (default settings), on the CPU provider."""
    env = server_env(providers="CPUExecutionProvider", log_level="warning")
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--models", str(models)]
    return start_process("ours", command, env=env, log_path=log_path, ready_path="/ready", timeout_s=300)


def start_naive(graph: Path, log_path: Path) -> ServerProcess:
    command = [sys.executable, "-m", "bench.naive", str(graph), "--host", "127.0.0.1"]
    return start_process(
        "naive", command, env=dict(os.environ), log_path=log_path, ready_path="/health", timeout_s=300
    )


async def _load(url: str, video: bytes, concurrency: int, requests: int, params: dict) -> dict[str, object]:
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    statuses: Counter[int] = Counter()
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(
                    "/classify", params=params, files={"file": ("clip.mp4", video, "video/mp4")}
                )
                latencies.append((time.perf_counter() - started) * 1000.0)
                statuses[response.status_code] += 1
                if response.status_code == 200 and "timings_ms" in response.json():
                    timings.append(response.json()["timings_ms"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ok = statuses.get(200, 0)
    result: dict[str, object] = {
        "concurrency": concurrency,
        "requests": requests,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "clips_per_s": round(ok / wall, 2),
        "latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)}
        | {"min": round(min(latencies), 1), "max": round(max(latencies), 1)},
        "_latencies": latencies,
    }
    if timings:
        result["server_timings_ms_p50"] = {
            key: round(float(np.median([t[key] for t in timings])), 1) for key in timings[0]
        }
    return result


def load(url: str, video: bytes, concurrency: int, requests: int, params: dict | None = None) -> dict:
    return asyncio.run(_load(url, video, concurrency, requests, params or {}))


def warm_up(url: str, video: bytes, requests: int = 3, params: dict | None = None) -> None:
    """First requests pay one-off costs (lazy imports, allocator growth, torch's first call)."""
    for _ in range(requests):
        httpx.post(
            url + "/classify", params=params, files={"file": ("clip.mp4", video, "video/mp4")}, timeout=300.0
        )


def served_frames(url: str, video: bytes) -> int:
    """The frame count the server runs for a request that names none."""
    response = httpx.post(url + "/classify", files={"file": ("clip.mp4", video, "video/mp4")}, timeout=300.0)
    response.raise_for_status()
    return int(response.json()["model"]["frames"])


def overhead_per_request(
    url: str, video: bytes, requests: int, params: dict | None = None
) -> dict[str, object]:
    """Client-side latency minus the server's own decode and inference time, one request at a time."""

    async def run() -> list[float]:
        overheads = []
        async with httpx.AsyncClient(base_url=url, timeout=300.0) as client:
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.post(
                    "/classify", params=params, files={"file": ("clip.mp4", video, "video/mp4")}
                )
                total = (time.perf_counter() - started) * 1000.0
                t = response.json()["timings_ms"]
                overheads.append(total - t["decode"] - t["inference"])
        return overheads

    values = asyncio.run(run())
    return {
        "requests": requests,
        "p50_ms": round(float(np.median(values)), 2),
        "min_ms": round(min(values), 2),
        "max_ms": round(max(values), 2),
        "rule": "client-measured total - server decode - server inference (preprocess, queue, HTTP, JSON)",
    }


class PeakRSS:
    """Samples a process's RSS every 50 ms in a thread while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def py_spy_profile(pid: int, seconds: float, work: Callable[[], object], out: Path) -> dict[str, object]:
    """Sample ``pid`` with py-spy (all threads, native frames off) while ``work`` runs; the share of
    samples in each stage of the request path, from the collapsed stacks."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    raw = out.with_suffix(".txt")
    command = [
        exe,
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(max(1, seconds))),
        "-r",
        "50",
        "-f",
        "raw",
        "-o",
        str(raw),
    ]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    work()
    try:
        _, err = spy.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return {"error": "py-spy did not finish"}
    if spy.returncode != 0 or not raw.is_file():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    # First match wins, most specific first: a stack is attributed to the deepest stage it is in.
    stages = {
        "decode (videocore.decode)": ("probe_and_decode",),
        "preprocess (resize/crop)": ("model_input", "service/preprocess.py"),
        "inference (batcher -> ORT)": ("_execute (service/batching.py",),
        "thread pools waiting": ("concurrent/futures/thread.py:8", "_next (service/batching.py"),
        "HTTP/ASGI/multipart/JSON (event loop)": ("uvicorn", "starlette", "multipart", "h11", "fastapi"),
    }
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        for stage, needles in stages.items():
            if any(needle in stack for needle in needles):
                counts[stage] += n
                break
        else:
            counts["other"] += n
    return {
        "samples": total,
        "share_percent": {k: round(100.0 * v / max(total, 1), 1) for k, v in counts.most_common()},
        "raw": raw.name,
    }
