"""Hostile clients against a real server (issue #21): slow uploads, media bombs, label floods.

Every attack runs against ``python -m service`` on 127.0.0.1 with real sockets and real files, and
records what the attacker got (status), how long it took, and the server's resident memory before,
at the peak (sampled every 20 ms) and after. ``tests/test_attack.py`` runs short versions in CI;
the long run prints the table that ``docs/reliability.md`` shows::

    python -m tests.attack            # starts its own server on the embedded default model
    python -m tests.attack --quick    # the CI sizes

An attack "passes" when the service refused it with a clear 4xx/5xx JSON answer (never a 500, never
a hang) and the innocent request sent alongside it was answered normally.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import av
import httpx
import numpy as np

from service.testing import ServerProcess as Server
from service.testing import start_server

if __package__:  # python -m tests.attack
    from tests.clips import encode_clip
    from tests.conftest import ROOT
else:  # imported by pytest (tests/ on sys.path)
    from clips import encode_clip
    from conftest import ROOT

MODELS = ROOT / "models"  # the embedded default model: starts in seconds


# ------------------------------------------------------------------------------------ measurements
def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Row:
    attack: str
    status: str = ""
    latency_s: float = 0.0
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    ok: bool = False
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        return (
            f"| {self.attack} | {self.status} | {self.latency_s:.2f} s | {self.rss_before:.0f} / "
            f"{self.rss_peak:.0f} / {self.rss_after:.0f} MiB | {'yes' if self.ok else 'NO'} | "
            f"{'; '.join(self.notes)} |"
        )


TABLE_HEAD = (
    "| attack | answer | attacker's latency | server RSS before / peak / after | passes | notes |\n"
    "|---|---|---|---|---|---|"
)


@contextmanager
def watched(server: Server, row: Row, settle_s: float = 1.5) -> Iterator[Row]:
    """Samples the server's RSS every 20 ms while the block runs, then ``settle_s`` after it."""
    pid = server.process.pid
    row.rss_before = rss_mib(pid)
    peak = [row.rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_mib(pid))
            except (OSError, ValueError):
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield row
    finally:
        time.sleep(settle_s)
        stop.set()
        sampler.join()
        row.rss_peak = peak[0]
        row.rss_after = rss_mib(pid)


def post_clip(url: str, data: bytes, timeout: float = 120.0, **params: object) -> tuple[int, float, dict]:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/classify", params=params, files={"file": ("clip", data, "video/mp4")}, timeout=timeout
    )
    elapsed = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    return response.status_code, elapsed, body


# ------------------------------------------------------------------------------------------- media
def normal_clip(directory: Path) -> bytes:
    return encode_clip(directory / "normal.mp4", width=160, height=120, frames=32).read_bytes()


def wide_gif(directory: Path, width: int = 65535, height: int = 48, frames: int = 16) -> bytes:
    """Under 1 KB: a GIF whose canvas is 65535x48 (aspect ratio 1365) and whose frames are each one
    pixel; FFmpeg's decoder still hands out every frame at the full canvas size."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = (
        b"\x21\xf9\x04\x00" + struct.pack("<H", 10) + b"\x00\x00"  # graphic control: 0.1 s
        + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # a 1x1 image at (0, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW, min code size 2: clear, pixel 0, end
    )  # fmt: skip
    data = header + frame * frames + b"\x3b"
    (directory / f"wide-{width}x{height}.gif").write_bytes(data)
    return data


def black_h264(path: Path, width: int, height: int, frames: int, rate: int = 30) -> bytes:
    """Black frames, one keyframe: tiny on disk, every frame must be decoded to reach the last."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=rate, options={"preset": "ultrafast", "crf": "51", "g": "100000"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((height * 3 // 2, width), np.uint8), format="yuv420p")
        for i in range(frames):
            frame.pts, frame.time_base = i, 1 / Fraction(rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.read_bytes()


def many_streams_mkv(directory: Path, streams: int = 1000) -> bytes:
    """An MKV holding ``streams`` copies of a one-frame H.264 stream."""
    one = directory / "one-frame.mp4"
    black_h264(one, 64, 48, 1)
    path = directory / f"streams-{streams}.mkv"
    with av.open(str(one)) as source, av.open(str(path), "w", format="matroska") as out:
        template = source.streams.video[0]
        packet = next(p for p in source.demux(template) if p.size)
        outs = [out.add_stream_from_template(template) for _ in range(streams)]
        for stream in outs:
            copy = av.Packet(bytes(packet))
            copy.pts = copy.dts = 0
            copy.time_base = template.time_base
            copy.is_keyframe = True
            copy.stream = stream
            out.mux(copy)
    return path.read_bytes()


# ----------------------------------------------------------------------------------- raw sockets
def _addr(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


def open_upload(url: str, length: int, first: bytes = b"", expect: bool = False) -> socket.socket:
    """A raw-video POST /classify whose headers promise ``length`` bytes; sends ``first`` only."""
    sock = socket.create_connection(_addr(url), timeout=60)
    head = (
        f"POST /classify HTTP/1.1\r\nHost: attack\r\nContent-Type: video/mp4\r\nContent-Length: {length}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    )
    sock.sendall(head.encode() + first)
    return sock


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict, dict[str, str], bool]:
    """(status, JSON body, headers, closed by the server) of the final answer on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return 0, {}, {}, False  # no answer in time, connection still open
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        while data.startswith(b"HTTP/1.1 100"):
            data = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else data
        if b"\r\n\r\n" in data:
            head, body = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            if len(body) >= int(headers.get("content-length", "0")):
                closed = _closed(sock)
                return int(lines[0].split()[1]), _json(body), headers, closed
    return 0, {}, {}, True


def _json(body: bytes) -> dict:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {"not_json": body[:200].decode("latin-1")}
    return parsed if isinstance(parsed, dict) else {"not_json": str(parsed)[:200]}


def _closed(sock: socket.socket, wait_s: float = 2.0) -> bool:
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


# ----------------------------------------------------------------------------------------- attacks
def slow_uploads(server: Server, clip: bytes, connections: int = 16, stall_s: float = 6.0) -> Row:
    """``connections`` uploads send their headers and 1 KB, then stall; meanwhile a normal request."""
    row = Row(f"{connections} uploads stalled after 1 KB")
    with watched(server, row):
        socks = [open_upload(server.url, 1_000_000, b"\0" * 1024) for _ in range(connections)]
        time.sleep(0.5)
        status, latency, _ = post_clip(server.url, clip)
        row.notes.append(f"normal request alongside: {status} in {latency:.2f} s")
        started = time.perf_counter()
        with ThreadPoolExecutor(len(socks)) as pool:
            answers = list(pool.map(lambda s: read_answer(s, stall_s + 10), socks))
        row.latency_s = time.perf_counter() - started + 0.5
        for s in socks:
            s.close()
    codes = sorted({a[0] for a in answers})
    row.status = ", ".join(str(c) for c in codes)
    closed = all(a[3] for a in answers)
    row.notes.append("connections closed" if closed else "connections left open")
    row.ok = status == 200 and codes == [408] and closed
    return row


def expect_continue(server: Server) -> Row:
    row = Row("Expect: 100-continue, no body")
    with watched(server, row, settle_s=0.2):
        started = time.perf_counter()
        sock = open_upload(server.url, 50_000, expect=True)
        status, body, _, closed = read_answer(sock, 30)
        row.latency_s = time.perf_counter() - started
        sock.close()
    row.status = str(status)
    row.ok = status == 408 and closed and "detail" in body
    return row


def wide_gif_bomb(server: Server, data: bytes, clips: int = 4) -> Row:
    row = Row(f"{len(data)}-byte GIF, 65535x48 canvas of 1x1 frames, clips={clips}")
    with watched(server, row):
        status, row.latency_s, body = post_clip(server.url, data, clips=clips, thumbnails="true")
    row.status = str(status)
    row.notes.append(str(body.get("detail", ""))[:90])
    row.ok = status == 422
    return row


def method_flood(server: Server, requests: int = 2000, method_bytes: int = 1000) -> Row:
    """Distinct long method names; /metrics must stay small and /health quick."""
    row = Row(f"{requests} requests with distinct {method_bytes}-byte methods")
    host, port = _addr(server.url)
    statuses: set[int] = set()
    with watched(server, row, settle_s=0.2):
        started = time.perf_counter()
        for i in range(requests):
            method = (f"X{i}".encode() + b"A" * method_bytes)[:method_bytes]
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(method + b" /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                reply = sock.recv(64)
                statuses.add(int(reply.split()[1]) if reply.startswith(b"HTTP/1.1") else 0)
        row.latency_s = (time.perf_counter() - started) / requests
        scrape = time.perf_counter()
        metrics = httpx.get(f"{server.url}/metrics", timeout=30)
        scrape_s = time.perf_counter() - scrape
        health = time.perf_counter()
        httpx.get(f"{server.url}/health", timeout=30)
        health_s = time.perf_counter() - health
    row.status = ", ".join(map(str, sorted(statuses)))
    row.notes.append(f"/metrics {len(metrics.content) / 1024:.0f} KiB, scraped in {scrape_s * 1000:.0f} ms")
    row.notes.append(f"/health then {health_s * 1000:.0f} ms")
    row.ok = len(metrics.content) < 256 * 1024 and 500 not in statuses
    return row


def multipart_flood(server: Server, parts: int = 5000, name_bytes: int = 4096, parallel: int = 3) -> Row:
    row = Row(f"multipart: {parts} parts with {name_bytes // 1024} KB names, no file, x{parallel}")
    boundary = "xyzzy"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{i}{"n" * name_bytes}"\r\n'
            "\r\nv\r\n".encode()
            for i in range(parts)
        )
        + f"--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with watched(server, row):
        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(f"{server.url}/classify", content=body, headers=headers, timeout=60),
                    range(parallel),
                )
            )
        row.latency_s = time.perf_counter() - started
    row.status = ", ".join(sorted({str(a.status_code) for a in answers}))
    size = max(len(a.content) for a in answers)
    row.notes.append(f"{len(body) / 1e6:.1f} MB sent each; error body {size} bytes")
    row.ok = all(a.status_code in (413, 422) for a in answers) and size <= 1024
    return row


def stream_bomb(server: Server, data: bytes, streams: int) -> Row:
    """FFmpeg reads only max_streams streams: the first one is classified, memory stays flat."""
    row = Row(f"MKV with {streams} one-frame H.264 streams ({len(data) // 1024} KB)")
    with watched(server, row):
        status, row.latency_s, body = post_clip(server.url, data)
    row.status = str(status)
    row.notes.append(str(body.get("detail", ""))[:90])
    row.ok = (status == 200 or 400 <= status < 500) and row.rss_peak - row.rss_before < 100
    return row


def decode_bombs(server: Server, bomb: bytes, clip: bytes, bombs: int = 4) -> Row:
    """``bombs`` one-keyframe 4K clips in parallel, then a normal request behind them."""
    row = Row(f"{bombs} x {len(bomb) // 1024} KB 4K one-keyframe H.264 in parallel + 1 normal")
    with watched(server, row), ThreadPoolExecutor(bombs) as pool:
        futures = [pool.submit(post_clip, server.url, bomb) for _ in range(bombs)]
        time.sleep(1.0)
        status, latency, _ = post_clip(server.url, clip)
        answers = [f.result() for f in futures]
    row.latency_s = max(a[1] for a in answers)
    row.status = ", ".join(sorted({str(a[0]) for a in answers}))
    row.notes.append(f"normal request behind them: {status} in {latency:.2f} s")
    row.notes.append(str(answers[0][2].get("detail", ""))[:80])
    row.ok = status == 200 and latency < 5 and all(a[0] in (200, 422) for a in answers)
    return row


def long_boundary(server: Server) -> Row:
    row = Row("multipart boundary of 300 characters")
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nxx\r\n--{boundary}--\r\n'
    with watched(server, row, settle_s=0.1):
        started = time.perf_counter()
        response = httpx.post(
            f"{server.url}/classify",
            content=body.encode(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        row.latency_s = time.perf_counter() - started
    row.status = str(response.status_code)
    row.ok = response.status_code == 422 and "detail" in response.json()
    return row


def drain_with_uploads(
    models: Path, log_dir: Path, bomb: bytes, uploads: int = 8, **settings: object
) -> tuple[Row, Server]:
    """SIGTERM while three long decodes are admitted and ``uploads`` uploads are unfinished: the uploads
    are answered 503 at once (not waited for), /ready says 503 + Retry-After, the decode is answered,
    and the server exits 0 with no 500 and no traceback in its log."""
    settings = {"decode_budget_s": 3, **settings}
    server = start_server(models, log_dir / "drain.log", log_level="info", **settings)
    row = Row(f"SIGTERM during 3 long decodes, {uploads} unfinished uploads")
    with ThreadPoolExecutor(3) as pool:
        decodes = [pool.submit(post_clip, server.url, bomb) for _ in range(3)]  # ~3 s on two turns
        socks = [open_upload(server.url, 1_000_000, b"\0" * 1024) for _ in range(uploads)]
        time.sleep(0.5)
        started = time.perf_counter()
        server.process.terminate()
        time.sleep(0.1)
        ready = httpx.get(f"{server.url}/ready", timeout=5)
        answers = [read_answer(s, 10) for s in socks]
        row.latency_s = time.perf_counter() - started
        for s in socks:
            s.close()
        decoded = sorted({d.result()[0] for d in decodes})
    code = server.process.wait(30)
    log = server.log()
    row.status = ", ".join(sorted({str(a[0]) for a in answers}))
    row.notes.append(f"uploads answered within {row.latency_s:.2f} s of SIGTERM")
    row.notes.append(f"/ready {ready.status_code} Retry-After {ready.headers.get('retry-after')}")
    row.notes.append(f"the admitted decodes: {decoded}")
    row.notes.append(f"exit {code}, {log.count(' 500')} 500s in the log")
    row.ok = (
        {a[0] for a in answers} == {503}
        and ready.status_code == 503
        and ready.headers.get("retry-after") is not None
        and set(decoded) <= {200, 422}
        and code == 0
        and " 500" not in log
        and "Traceback" not in log
    )
    return row, server


# -------------------------------------------------------------------------------------------- main
def run_all(server: Server, directory: Path, quick: bool, log: Callable[[str], None]) -> list[Row]:
    clip = normal_clip(directory)
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        log(row.markdown())

    record(slow_uploads(server, clip, connections=16))
    record(expect_continue(server))
    record(wide_gif_bomb(server, wide_gif(directory)))
    record(method_flood(server, requests=300 if quick else 9000))
    record(multipart_flood(server, parts=2000 if quick else 20000))
    record(stream_bomb(server, many_streams_mkv(directory, 1000), 1000))
    frames = 300 if quick else 1500
    record(decode_bombs(server, black_h264(directory / "bomb.mp4", 3840, 2160, frames), clip))
    record(long_boundary(server))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attack", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI sizes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        server = start_server(MODELS, directory / "server.log", decode_workers=2, max_queue=16)
        try:
            print(f"server pid {server.process.pid}, fresh RSS {rss_mib(server.process.pid):.0f} MiB")
            print(TABLE_HEAD)
            rows = run_all(server, directory, args.quick, lambda line: print(line, flush=True))
            row, _ = drain_with_uploads(
                MODELS, directory, black_h264(directory / "drain.mp4", 1920, 1080, 600)
            )
            print(row.markdown())
            rows.append(row)
            errors = [line for line in server.log().splitlines() if " 500" in line or "Traceback" in line]
            print(f"\nserver log: {len(errors)} lines with a 500 or a traceback")
        finally:
            server.stop()
    failed = [r.attack for r in rows if not r.ok]
    print("all attacks refused cleanly" if not failed else f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
