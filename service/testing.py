"""Real sda-serve servers for tests and benchmarks, in two tiers.

* :func:`start_server`: ``python -m service`` in a subprocess on a free port of 127.0.0.1, its
  settings as ``SDA_*`` environment variables, its output in a log file; returns once ``/ready``
  answers 200. For what needs a real process: signals and drain, sockets, slow clients, exit codes,
  other programs given a URL (a browser, a CLI, a fuzzer, a benchmark). :func:`start_process` starts
  any such server command (the benchmark's baseline too); :func:`run_to_exit` runs one that is
  expected to refuse to start.
* :func:`serve_in_process`: the same application (``service.app.create_app``) with its ASGI lifespan
  running (real engine, real ONNX Runtime sessions, real decode pool) on an event loop in a thread,
  and ``httpx`` clients that call it through ``httpx.ASGITransport``: no socket, no process start.

Both return an object with ``url`` and ``client()`` (an ``httpx.Client``), so a test can be written
once against either.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from service.app import create_app
from service.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]

# Settings every test server gets unless a test says otherwise: CPU only, one ORT thread per session
# (test machines are small and shared), quiet logs.
TEST_SETTINGS: dict[str, object] = {
    "providers": "CPUExecutionProvider",
    "intra_op_threads": 1,
    "log_level": "warning",
}


# --------------------------------------------------------------------------- subprocess servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A server running in a subprocess at ``url``; its stdout and stderr go to ``log_path``."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        """SIGTERM (the service drains, then exits), SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def server_command(models: Path | str, port: int, host: str = "127.0.0.1") -> list[str]:
    """``python -m service`` as ``make run`` starts it, on ``host:port`` with ``models``."""
    return [sys.executable, "-m", "service", "--host", host, "--port", str(port), "--models", str(models)]


def server_env(**settings: object) -> dict[str, str]:
    """This process's environment without its ``SDA_*`` variables, then ``settings`` as ``SDA_*``
    (``max_queue=1`` -> ``SDA_MAX_QUEUE=1``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDA_")}
    env.update({f"SDA_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_process(
    name: str,
    command: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    ready_path: str = "/ready",
    timeout_s: float = 180.0,
) -> ServerProcess:
    """Run ``command + ['--port', <free port>]`` from the repository root and wait until
    ``ready_path`` answers 200; raise with the log if it exits or is not ready in ``timeout_s``."""
    port = free_port()
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProcess(name, f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + ready_path, timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} not ready after {timeout_s} s:\n{server.log()}")


def start_server(
    models: Path | str, log_path: Path, *, timeout_s: float = 180.0, **settings: object
) -> ServerProcess:
    """``python -m service --models <models>`` with :data:`TEST_SETTINGS` updated by ``settings``."""
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--models", str(models)]
    env = server_env(**{**TEST_SETTINGS, **settings})
    return start_process("sda-serve", command, env=env, log_path=log_path, timeout_s=timeout_s)


def run_to_exit(
    models: Path | str, *, timeout_s: float = 120.0, **settings: object
) -> subprocess.CompletedProcess[str]:
    """Start ``python -m service`` where it is expected to refuse to start; its exit status and output."""
    return subprocess.run(
        server_command(models, free_port()),
        cwd=ROOT,
        env=server_env(**{**TEST_SETTINGS, **settings}),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


# ------------------------------------------------------------------------------ in-process servers
class _ExplicitSettings(Settings):
    """Settings from keyword arguments only: no ``SDA_*`` variable or ``.env`` file of the machine
    running the tests leaks in (as :func:`server_env` drops them for a subprocess)."""

    @classmethod
    def settings_customise_sources(  # type: ignore[override]
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, **_others: object
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def make_settings(models: Path | str, **settings: object) -> Settings:
    """:data:`TEST_SETTINGS` updated by ``settings``, serving the repository ``models``."""
    values: dict[str, Any] = {**TEST_SETTINGS, "models_dir": models, **settings}
    return _ExplicitSettings(**values)


class _ChunksFromThread(httpx.AsyncByteStream):
    """A request body given as a sync iterable (e.g. a generator that sleeps between chunks), read
    in a worker thread so that a slow body stalls only its own request, as on a socket."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._iterator = iter(stream)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await asyncio.to_thread(next, self._iterator, None)) is not None:
            yield chunk


class _LoopTransport(httpx.BaseTransport):
    """A sync transport that runs each request through ``httpx.ASGITransport`` on the app's loop;
    requests from several threads run concurrently there."""

    def __init__(self, app: object, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            stream = _ChunksFromThread(stream)
        forwarded = httpx.Request(request.method, request.url, headers=request.headers, stream=stream)

        async def call() -> tuple[int, httpx.Headers, bytes]:
            response = await self._asgi.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, body = asyncio.run_coroutine_threadsafe(call(), self._loop).result()
        return httpx.Response(status, headers=headers, content=body, request=request)


_Lifespan = tuple["asyncio.Queue[dict[str, Any]]", "asyncio.Queue[dict[str, Any]]", "asyncio.Task[Any]"]


@dataclass
class InProcessServer:
    """``create_app(settings)`` with its lifespan running on an event loop in a thread."""

    settings: Settings
    url: str = "http://sda-serve.test"
    app: object = field(init=False)
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _thread: threading.Thread = field(init=False)
    _lifespan: _Lifespan | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.app = create_app(self.settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="in-process-server", daemon=True)

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, transport=_LoopTransport(self.app, self._loop), **kwargs)  # type: ignore[arg-type]

    def _run(self, coroutine: object, timeout_s: float | None = None) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 180.0) -> None:
        """Run the ASGI lifespan startup (load the models) as uvicorn does; raise with the reason
        if the application refuses to start."""
        self._thread.start()
        self._run(self._startup(), timeout_s)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Run the lifespan shutdown (engine closed, decode pool stopped), then stop the loop."""
        try:
            if self._lifespan is not None:
                self._run(self._shutdown(), timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
            self._loop.close()

    async def _startup(self) -> None:
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        task = asyncio.ensure_future(self.app(scope, to_app.get, from_app.put))  # type: ignore[operator]
        self._lifespan = (to_app, from_app, task)
        await to_app.put({"type": "lifespan.startup"})
        message = await self._next_message()
        if message.get("type") != "lifespan.startup.complete":
            self._lifespan = None
            outcomes = await asyncio.gather(task, return_exceptions=True)
            error = outcomes[0]
            if isinstance(error, BaseException):  # the lifespan's own exception
                raise RuntimeError(f"sda-serve cannot start: {error}") from error
            raise RuntimeError(f"sda-serve cannot start: {message}")

    async def _shutdown(self) -> None:
        assert self._lifespan is not None
        to_app, _, task = self._lifespan
        await to_app.put({"type": "lifespan.shutdown"})
        message = await self._next_message()
        self._lifespan = None
        await task
        if message.get("type") != "lifespan.shutdown.complete":
            raise RuntimeError(f"sda-serve did not shut down cleanly: {message}")

    async def _next_message(self) -> dict[str, Any]:
        assert self._lifespan is not None
        _, from_app, task = self._lifespan
        getter = asyncio.ensure_future(from_app.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            message: dict[str, Any] = getter.result()
            return message
        getter.cancel()
        error = task.exception()
        return {"type": "lifespan.failed", "message": repr(error) if error else "the lifespan ended"}


@contextmanager
def serve_in_process(models: Path | str, **settings: object) -> Iterator[InProcessServer]:
    """``with serve_in_process(repo, max_queue=1) as server: server.client().get("/health")``:
    :data:`TEST_SETTINGS` updated by ``settings``; the models are loaded before the block runs."""
    server = InProcessServer(make_settings(models, **settings))
    try:
        server.start()
        yield server
    finally:
        server.stop()
