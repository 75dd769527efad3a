"""``python -m service [--host 127.0.0.1] [--port 8000] [--models DIR]``: one uvicorn process.

Settings come from ``SDA_*`` environment variables (see ``service/core/config.py``); the flags
override the matching ones. Exits non-zero (uvicorn's 3) when the engine cannot start, e.g. no
graphs or ``SDA_REQUIRE_GPU=1`` without a working GPU provider.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.core.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--models", help="model repository (overrides SDA_MODELS_DIR)")
    parser.add_argument("--log-level", help="overrides SDA_LOG_LEVEL")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {}
    if args.models:
        overrides["models_dir"] = args.models
    if args.log_level:
        overrides["log_level"] = args.log_level
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"sda-serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM gracefully (admitted requests finish, then the lifespan shuts down) and
    # then re-raises it; this handler turns that re-raise into exit status 0 instead of death by signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
