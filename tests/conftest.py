"""Service test fixtures: a model repository of tiny exported graphs, real clips encoded with PyAV,
and the two tiers of servers from ``service.testing``: ``app`` (the application with its lifespan,
called in-process through httpx's ASGI transport) for routes, validation and responses; ``server``
(``python -m service`` in a subprocess on 127.0.0.1) for what needs a real process or socket."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.repository import latest_version_dir
from service.testing import InProcessServer, ServerProcess, serve_in_process, start_server

ROOT = Path(__file__).resolve().parents[1]
# The embedded default model: whichever version is highest, as the service serves it.
DEFAULT_MODEL_NAME = "sda-tsm-synthetic"
DEFAULT_MODEL_DIR = latest_version_dir(ROOT / "models", DEFAULT_MODEL_NAME)
LABELS = ("push", "pull", "spin")
SIZE = 64  # crop size of the tiny test graphs


def _export_sources_digest() -> str:
    """Exported graphs depend only on the network, export and graph-contract code: cache them per
    version of it (the trainer and the evaluators make no graph)."""
    not_in_graphs = {"train.py", "compare.py", "average.py", "evaluate.py", "summary.py", "timeline_eval.py"}
    sources = [*ROOT.glob("model/*.py"), *ROOT.glob("export/*.py"), *ROOT.glob("videocore/*.py")]
    digest = hashlib.sha256()
    for path in sorted(p for p in sources if p.name not in not_in_graphs or p.parent.name != "model"):
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
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


# Both test models, CPU provider, default limits: the settings of the main servers of both tiers.
MAIN_SETTINGS = {"max_batch_wait_ms": 2, "decode_workers": 2, "max_queue": 16, "default_model": "tiny-sda"}


@pytest.fixture(scope="session")
def app(model_repo: Path) -> Iterator[InProcessServer]:
    """The main application in-process (real engine and ONNX Runtime sessions, no socket)."""
    with serve_in_process(model_repo, **MAIN_SETTINGS) as running:
        yield running


@pytest.fixture(scope="session")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The main server as a real process on 127.0.0.1, for clients that need a URL."""
    running = start_server(model_repo, tmp_path_factory.mktemp("server") / "server.log", **MAIN_SETTINGS)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-clips")
