"""Service test fixtures: a model repository of tiny exported graphs, real uvicorn servers on
127.0.0.1 (``python -m service`` in a subprocess), and real clips encoded with PyAV."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.repository import latest_version_dir

ROOT = Path(__file__).resolve().parents[1]
# The embedded default model: whichever version is highest, as the service serves it.
DEFAULT_MODEL_NAME = "sda-tsm-synthetic"
DEFAULT_MODEL_DIR = latest_version_dir(ROOT / "models", DEFAULT_MODEL_NAME)
LABELS = ("push", "pull", "spin")
SIZE = 64  # crop size of the tiny test graphs


def _export_sources_digest() -> str:
    """Exported graphs depend only on the model and export code: cache them per version of it."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("model/*.py"), *ROOT.glob("export/*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _export_repository(target: Path) -> None:
    import torch

    from export import export_model
    from model import build_model

    def tiny(name: str) -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(name, len(LABELS), 8, width=0.125).eval()
        torch.nn.init.normal_(model.fc.weight, 0.0, 0.5)  # distinct classes, not ~uniform probabilities
        torch.nn.init.normal_(model.fc.bias, 0.0, 0.5)
        return model

    quiet = lambda _msg: None  # noqa: E731
    export_model(
        tiny("sda_tsm_r50"), target / "tiny-sda" / "1", frames=(8, 16), size=SIZE, labels=LABELS,
        model_name="tiny-sda", version=1, log=quiet,
    )  # fmt: skip
    export_model(
        tiny("tsn_r50"), target / "tiny-tsn" / "1", frames=(8,), size=SIZE, labels=LABELS,
        model_name="tiny-tsn", version=1, log=quiet,
    )  # fmt: skip


@pytest.fixture(scope="session")
def model_repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<repo>/tiny-sda/1/model-{8,16}f.onnx`` (SDA-TSM) and ``<repo>/tiny-tsn/1/model-8f.onnx`` (TSN,
    no dependency weights), exported with ``export.export_model``; cached in pytest's cache dir."""
    cache_root = (
        Path(request.config.cache.mkdir("sda-service-models"))
        if getattr(request.config, "cache", None) is not None  # None with -p no:cacheprovider
        else tmp_path_factory.mktemp("sda-service-models")
    )
    cache = cache_root / _export_sources_digest()
    if not (cache / "complete").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        staging = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _export_repository(staging)
        (staging / "complete").write_text("ok\n")
        staging.rename(cache)
    return cache


@pytest.fixture(scope="session")
def tsn_only_repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding only the small TSN graph (fast to load for the extra servers)."""
    repo = tmp_path_factory.mktemp("tsn-only")
    shutil.copytree(model_repo / "tiny-tsn", repo / "tiny-tsn")
    return repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def server_command(models: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models",
        str(models),
    ]


def server_env(**settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDA_")}
    env.update(
        {"SDA_PROVIDERS": "CPUExecutionProvider", "SDA_INTRA_OP_THREADS": "1", "SDA_LOG_LEVEL": "warning"}
    )
    env.update({f"SDA_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_server(models: Path, log_path: Path, timeout_s: float = 180.0, **settings: object) -> Server:
    """Start ``python -m service`` and wait until /ready answers 200 (or fail with its log)."""
    port = free_port()
    log_file = log_path.open("w")
    process = subprocess.Popen(
        server_command(models, port),
        cwd=ROOT,
        env=server_env(**settings),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{server.log()}")


@pytest.fixture(scope="session")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The main server: both test models, CPU provider, default limits."""
    running = start_server(
        model_repo,
        tmp_path_factory.mktemp("server") / "server.log",
        max_batch_wait_ms=2,
        decode_workers=2,
        max_queue=16,
        default_model="tiny-sda",
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-clips")
