"""Precision variants: ``python -m export --fp16 --int8`` writes ``model-{T}f-fp16.onnx`` and
``model-{T}f-int8.onnx`` beside the fp32 graph, each recording its check against fp32 in its metadata;
the service serves them (per-provider default, ``?precision=``), names what ran, and refuses a variant
whose check failed or is missing. Real tiny graphs exported by the test, real ORT sessions."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest
from clips import encode_clip
from fastapi.testclient import TestClient

from service.app import create_app
from service.core.config import Settings
from service.repository import scan
from service.upload import FILE_FIELD
from videocore.contract import GraphMetadata

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("push", "pull", "spin")
INT8_MAX_DROP = 25.0  # points: a random tiny model's top-1 is near chance, so int8 flips some clips


def _digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("model/*.py"), *ROOT.glob("export/*.py"), ROOT / "videocore/contract.py"]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _export(target: Path) -> None:
    import torch

    from export import export_model
    from model import build_model

    torch.manual_seed(0)
    model = build_model("tsn_r50", len(LABELS), 8, width=0.125).eval()
    torch.nn.init.normal_(model.fc.weight, 0.0, 0.5)
    torch.nn.init.normal_(model.fc.bias, 0.0, 0.5)
    export_model(
        model, target / "tiny" / "1", frames=(8,), size=64, labels=LABELS, model_name="tiny", version=1,
        fp16=True, int8=True, int8_clips=(8, 32), int8_max_top1_drop=INT8_MAX_DROP, log=lambda _m: None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def repo(request, tmp_path_factory) -> Path:
    """tiny/1/model-8f.onnx, -fp16, -int8 (cached per version of the model and export code)."""
    cache = Path(request.config.cache.mkdir("sda-precision-models")) / _digest()
    if not (cache / "complete").is_file():
        shutil.rmtree(cache, ignore_errors=True)
        _export(cache)
        (cache / "complete").write_text("ok\n")
    return cache


def metadata(path: Path) -> GraphMetadata:
    proto = onnx.load(str(path), load_external_data=False)
    return GraphMetadata.from_props({e.key: e.value for e in proto.metadata_props})


def rewrite_check(src: Path, dst: Path, check: dict | None) -> None:
    """Copy the graph with its recorded precision check replaced (None: removed)."""
    proto = onnx.load(str(src))
    props = [(e.key, e.value) for e in proto.metadata_props if e.key != "precision_check"]
    if check is not None:
        props.append(("precision_check", json.dumps(check)))
    del proto.metadata_props[:]
    for key, value in props:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(dst))


def app_client(models: Path, **settings) -> TestClient:
    return TestClient(
        create_app(
            Settings(models_dir=models, providers=["CPUExecutionProvider"], intra_op_threads=1, **settings)
        )
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return encode_clip(tmp_path_factory.mktemp("clip") / "c.mp4", width=96, height=72).read_bytes()


def classify(client: TestClient, clip: bytes, **params):
    return client.post("/classify", params=params, files={FILE_FIELD: ("c.mp4", clip, "video/mp4")})


def test_export_writes_variants_that_record_their_check(repo):
    files = scan(repo)
    assert [(g.frames, g.precision, g.path.name) for g in files] == [
        (8, "fp32", "model-8f.onnx"), (8, "fp16", "model-8f-fp16.onnx"), (8, "int8", "model-8f-int8.onnx"),
    ]  # fmt: skip
    fp32, fp16, int8 = (metadata(g.path) for g in files)
    assert (fp32.precision, fp32.precision_check) == ("fp32", None)
    assert fp16.precision == "fp16" and fp16.precision_check is not None
    assert fp16.precision_check.method == "parity" and fp16.precision_check.passed
    assert fp16.precision_check.max_prob_diff < 2e-2 and fp16.precision_check.clips == 4
    assert int8.precision == "int8" and int8.precision_check is not None
    check = int8.precision_check
    assert check.method == "agreement" and check.passed and check.clips == 32
    assert check.tolerance == INT8_MAX_DROP and check.top1_agreement >= 100 - INT8_MAX_DROP
    assert all(m.refusal() is None for m in (fp32, fp16, int8))


def test_requests_pick_a_precision_and_the_response_names_it(repo, clip):
    with app_client(repo) as client:
        graphs = client.get("/models").json()["models"][0]["graphs"]
        assert [(g["precision"], g["default_precision"]) for g in graphs] == [
            ("fp32", True), ("fp16", False), ("int8", False),
        ]  # fmt: skip
        assert graphs[0]["precision_check"] is None
        assert graphs[2]["precision_check"]["method"] == "agreement"
        body = classify(client, clip).json()
        assert body["model"]["precision"] == "fp32"
        by_precision = {"fp32": body}
        for precision in ("fp16", "int8"):
            response = classify(client, clip, precision=precision)
            assert response.status_code == 200, response.text
            by_precision[precision] = response.json()
            assert by_precision[precision]["model"]["precision"] == precision
        probs = {p: {x["label"]: x["score"] for x in b["predictions"]} for p, b in by_precision.items()}
        assert all(abs(probs["fp16"][k] - probs["fp32"][k]) < 2e-2 for k in LABELS)
        # each variant's own session ran (its batcher counts one inference run)
        metrics = client.get("/metrics").text
        for label in ("tiny/1/8f", "tiny/1/8f-fp16", "tiny/1/8f-int8"):
            assert f'sda_batch_rows_count{{model="{label}"}} 1.0' in metrics
        response = classify(client, clip, precision="bf16")
        assert response.status_code == 422 and "fp32, fp16, int8" in response.json()["detail"]


def test_default_precision_per_provider_setting(repo, clip):
    with app_client(repo, default_precision_cpu="int8") as client:
        assert classify(client, clip).json()["model"]["precision"] == "int8"
        graphs = client.get("/models").json()["models"][0]["graphs"]
        assert [g["precision"] for g in graphs if g["default_precision"]] == ["int8"]


@pytest.mark.parametrize("check", ["failed", "missing"])
def test_a_variant_whose_check_failed_or_is_missing_is_not_served(repo, clip, tmp_path, check):
    shutil.copytree(repo / "tiny", tmp_path / "tiny")
    int8 = tmp_path / "tiny" / "1" / "model-8f-int8.onnx"
    recorded = metadata(int8).precision_check
    assert recorded is not None
    failed = {**recorded.__dict__, "passed": False, "top1_agreement": 40.0}
    rewrite_check(int8, int8, failed if check == "failed" else None)
    with app_client(tmp_path, default_precision_cpu="int8") as client:
        graphs = client.get("/models").json()["models"][0]["graphs"]
        assert [g["precision"] for g in graphs] == ["fp32", "fp16"]
        assert classify(client, clip).json()["model"]["precision"] == "fp32"  # the default falls back
        response = classify(client, clip, precision="int8")
        assert response.status_code == 422 and "fp32, fp16" in response.json()["detail"]
