"""``python -m service [--host 127.0.0.1] [--port 8000] [--models DIR]``: one uvicorn process.

Settings come from ``SDA_*`` environment variables (see ``service/core/config.py``); the flags
override the matching ones. Exits non-zero (uvicorn's 3) when the engine cannot start, e.g. no
graphs or ``SDA_REQUIRE_GPU=1`` without a working GPU provider.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE

from service.app import create_app
from service.core.config import Settings

log = logging.getLogger("sda_serve")


class DrainingServer(uvicorn.Server):
    """uvicorn with a drain before its graceful shutdown. On the first SIGTERM/SIGINT the engine stops
    admitting: new /classify and /ready answers are 503 with Retry-After while the socket stays open,
    so a load balancer sees a clear "go elsewhere" instead of refused connections. Once every admitted
    request is answered (or ``drain_s`` has passed) uvicorn's own graceful shutdown runs. Uploads
    not yet complete hold no slot and are not waited for: they are answered 503 + Retry-After and
    their connections closed. A second signal skips the rest of the drain."""

    def __init__(self, app: FastAPI, config: uvicorn.Config, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_s = drain_s
        self.drain_deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        engine = getattr(self.app.state, "engine", None)
        if self.drain_deadline is None and self.drain_s > 0 and engine is not None and engine.ready:
            self._captured_signals.append(sig)  # re-raised after serving, as uvicorn does
            engine.ready = False
            self.drain_deadline = time.monotonic() + self.drain_s
            log.info("draining: %d request(s) in flight, new ones get 503", engine.inflight)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            # Unfinished uploads are not waited for: they are answered 503 and closed at once.
            self.app.state.pipeline.uploads.stop()
            engine = self.app.state.engine
            if engine.inflight == 0 or time.monotonic() >= self.drain_deadline:
                log.info("drained (%d still in flight); shutting down", engine.inflight)
                self.should_exit = True
        return await super().on_tick(counter)


class _KnownStartupFailure(logging.Filter):
    """Drops the lifespan traceback uvicorn logs when the app has already said, in one line, why it
    cannot start (``app.state.startup_error``); any other failure keeps its traceback."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        known = getattr(self.app.state, "startup_error", None) is not None
        return not (known and str(record.msg).startswith("Traceback"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, help="OIP gRPC port (overrides SDA_GRPC_PORT; off: unset)")
    parser.add_argument("--models", help="model repository (overrides SDA_MODELS_DIR)")
    parser.add_argument("--log-level", help="overrides SDA_LOG_LEVEL")
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {}
    if args.models:
        overrides["models_dir"] = args.models
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.grpc_port is not None:
        overrides["grpc_port"] = args.grpc_port
    if "SDA_GRPC_HOST" not in os.environ:
        overrides["grpc_host"] = args.host  # gRPC listens where HTTP does
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"sda-serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    # After the drain and uvicorn's graceful shutdown the captured SIGTERM is re-raised; this handler
    # turns that re-raise into exit status 0 instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        server_header=False,  # no "server: uvicorn" for strangers to read
        # The pure-Python HTTP parser and asyncio loop, named rather than auto-picked: the image installs
        # neither httptools nor uvloop (requirements/serve.lock), so every environment runs what it runs.
        http="h11",
        loop="asyncio",
    )
    server = DrainingServer(app, config, settings.shutdown_drain_s)
    logging.getLogger("uvicorn.error").addFilter(_KnownStartupFailure(app))
    server.run()
    if not server.started:  # the lifespan failed (no models, corrupt graph, ...): uvicorn's exit code
        return STARTUP_FAILURE
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
