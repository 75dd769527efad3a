"""Engine pieces with real ONNX Runtime sessions: dynamic batching, provider choice, the silent
CUDA->CPU fallback (this machine has no GPU), require_gpu, settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.batching import DynamicBatcher
from service.core.config import Settings
from service.engine import CPU, CUDA, StartupError, cuda_libraries_found, resolve_providers
from service.repository import RepositoryError, latest_version_dir
from service.testing import run_to_exit, serve_in_process


@pytest.fixture(scope="module")
def tsn_session(model_repo: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        str(model_repo / "tiny-tsn" / "1" / "model-8f.onnx"), options, providers=["CPUExecutionProvider"]
    )


def run_probs(session: ort.InferenceSession):
    def run(frames: np.ndarray) -> dict[str, np.ndarray]:
        return {"probs": session.run(["probs"], {"frames": frames})[0]}

    return run


def clips(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, 8, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(("max_batch", "sizes"), [(8, [1, 2, 1, 3]), (4, [6, 1])])
def test_batcher_groups_requests_and_returns_each_its_rows(tsn_session, max_batch, sizes):
    batches: list[tuple[int, int]] = []
    batcher = DynamicBatcher(
        "t",
        run_probs(tsn_session),
        max_batch_size=max_batch,
        max_wait_s=0.3,
        on_batch=lambda requests, rows, _ms: batches.append((requests, rows)),
    )
    inputs = [clips(n, seed) for seed, n in enumerate(sizes)]
    expected = [tsn_session.run(["probs"], {"frames": x})[0] for x in inputs]

    async def main():
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    batcher.start()
    try:
        results = asyncio.run(main())
    finally:
        batcher.stop()
    for got, want, n in zip(results, expected, sizes, strict=True):
        assert got.outputs["probs"].shape == (n, 3)
        np.testing.assert_allclose(got.outputs["probs"], want, atol=1e-5)
        assert got.queue_ms >= 0 and got.inference_ms > 0
    if max_batch == 8:
        assert batches == [(4, 7)]  # all four concurrent requests shared one run
    else:
        assert batches == [(1, 6), (1, 1)]  # 6 rows > max batch: alone, run in chunks of 4; then the next
        assert results[0].batch_rows == 6


def test_batcher_fails_requests_when_the_run_fails():
    def broken(frames):
        raise RuntimeError("boom")

    batcher = DynamicBatcher("broken", broken, max_batch_size=4, max_wait_s=0.0)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(batcher.submit(np.zeros((1, 2), np.uint8)))
    finally:
        batcher.stop()


def test_provider_resolution():
    auto = resolve_providers(["auto"])
    assert auto[-1] == CPU
    # onnxruntime-gpu claims CUDA even where its libraries are missing: auto asks only when they exist
    assert (CUDA in auto) == (CUDA in ort.get_available_providers() and cuda_libraries_found())
    assert resolve_providers(["CUDAExecutionProvider"]) == [CUDA, CPU]
    assert resolve_providers(["CPUExecutionProvider"]) == [CPU]
    with pytest.raises(StartupError, match="unknown execution provider"):
        resolve_providers(["FancyExecutionProvider"])


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SDA_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("SDA_CORS_ORIGINS", '["http://a.example"]')
    monkeypatch.setenv("SDA_MAX_QUEUE", "3")
    monkeypatch.setenv("SDA_API_KEY", "")
    monkeypatch.setenv("SDA_LOG_LEVEL", "DEBUG")
    monkeypatch.chdir(tmp_path)  # no stray .env
    settings = Settings()
    assert settings.providers == [CUDA, CPU]
    assert settings.cors_origins == ["http://a.example"]
    assert settings.max_queue == 3 and settings.api_key is None and settings.log_level == "debug"
    monkeypatch.setenv("SDA_MAX_QUEUE", "0")
    with pytest.raises(ValueError, match="max_queue"):
        Settings()


def test_silent_cuda_fallback_is_detected_and_reported(tsn_only_repo, clip_dir, caplog):
    if any(p != CPU for p in _session_providers(tsn_only_repo)):
        pytest.skip("this machine really runs CUDA: no fallback to detect")
    from clips import encode_clip

    caplog.set_level("WARNING", logger="sda_serve")
    with serve_in_process(tsn_only_repo, providers=CUDA) as server, server.client() as client:
        health = client.get("/health").json()
        assert health["provider"] == CPU
        assert health["providers"]["requested"] == [CUDA, CPU]
        assert health["providers"]["active"] == [CPU]
        assert health["providers"]["fallback"] is True
        graph = client.get("/models").json()["models"][0]["graphs"][0]
        assert graph["fallback"] is True and graph["providers"] == [CPU]
        video = encode_clip(clip_dir / "fallback.mp4", frames=10)
        body = client.post("/classify", files={"file": video.read_bytes()}).json()
        assert body["model"]["provider"] == CPU
        assert 'sda_provider_fallback{model="tiny-tsn",provider="CPUExecutionProvider"} 1.0' in (
            client.get("/metrics").text
        )
    assert "runs it on ['CPUExecutionProvider']" in caplog.text


def _session_providers(repo: Path) -> list[str]:
    graph = next(repo.glob("*/*/model-*f.onnx"))
    return ort.InferenceSession(str(graph), providers=[CUDA, CPU]).get_providers()


def test_require_gpu_without_a_gpu_exits_non_zero_with_a_message(tsn_only_repo):
    if any(p != CPU for p in _session_providers(tsn_only_repo)):
        pytest.skip("this machine really runs CUDA")
    result = run_to_exit(tsn_only_repo, providers="auto", require_gpu="true")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "require_gpu is set but no GPU execution provider is active" in output
    assert "tiny-tsn/1/8f on CPUExecutionProvider" in output


def test_default_frames_with_no_graph_exits_non_zero_with_a_message(tsn_only_repo):
    result = run_to_exit(tsn_only_repo, default_frames="12")
    assert result.returncode != 0
    assert "default_frames 12 matches no graph; frame counts in the repository: [8]" in (
        result.stdout + result.stderr
    )


def test_empty_repository_exits_non_zero_with_a_message(tmp_path):
    result = run_to_exit(tmp_path)
    assert result.returncode != 0
    assert "no graphs found" in result.stdout + result.stderr


def test_latest_version_dir_picks_the_highest_numeric_version(tmp_path):
    # "10" must beat "9" (numeric, not string order) and any non-numeric tag; other models do not count.
    for name, version in [("clf", "9"), ("clf", "10"), ("clf", "beta"), ("other", "99")]:
        (tmp_path / name / version).mkdir(parents=True)
        (tmp_path / name / version / "model-8f.onnx").write_bytes(b"")
    (tmp_path / "clf" / "11").mkdir()  # a version directory without a graph is not a version
    assert latest_version_dir(tmp_path, "clf") == tmp_path / "clf" / "10"
    with pytest.raises(RepositoryError, match="no graphs of model 'missing'"):
        latest_version_dir(tmp_path, "missing")
