"""``python -m bench --smoke`` runs every section end to end (real servers, real ORT and PyTorch,
clips encoded with PyAV) and writes valid JSON with every section; no timing is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


def test_smoke_benchmark_writes_every_section(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--cache", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "bench.json").read_text())
    for section in ("machine", "engine", "decode", "end_to_end", "targets"):
        assert results[section], section
    assert results["smoke"] is True
    assert results["machine"]["cpu"]["fp32_peak_gflops"] > 0
    assert results["machine"]["sgemm"]["gflops"]["median"] > 0
    engine = results["engine"]["models"][0]["batches"][0]
    assert {"ort_ms_per_clip", "torch_ms_per_clip", "int8_ms_per_clip", "ort_gflops"} <= engine.keys()
    assert results["engine"]["ort_settings_trial"]["results"]
    assert results["engine"]["ort_profile_op_share_percent"]
    accuracy = results["engine"]["int8_accuracy_default_model"]["8f"]
    assert accuracy["check"] == "accuracy" and 0 <= accuracy["int8_top1"] <= 100
    assert {d["clip"] for d in results["decode"]} == {"h264-320p-2s-smoke", "vp9-webm-240p-2s-smoke"}
    e2e = results["end_to_end"]
    for side in ("ours", "naive"):
        assert [row["concurrency"] for row in e2e[side]] == [1, 2]
        # every request answered 200: the baseline and the service really classified the clip
        assert all(set(row["status_counts"]) == {"200"} for row in e2e[side]), e2e[side]
    # The default model is served at its default_frames (16) when a request names none; the bench
    # measures that next to the like-for-like 8-frame rows.
    assert e2e["default_frames"] == 16
    assert [row["concurrency"] for row in e2e["ours_default_frames"]] == [1, 2]
    assert all(set(row["status_counts"]) == {"200"} for row in e2e["ours_default_frames"])
    assert {"at_rest", "peak_under_load", "growth"} <= e2e["memory_mb"].keys()
    assert "p50_ms" in e2e["overhead"]
    assert {t["target"] for t in results["targets"]} >= {
        "ORT vs PyTorch eager", "share of the sgemm ceiling", "int8 QDQ vs fp32", "HTTP+JSON overhead",
        "service at saturation vs engine only", "end to end vs naive baseline", "RSS growth",
    }  # fmt: skip
    assert all(math.isfinite(x) for x in _numbers(results))
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| target |" in (out / "bench.md").read_text()
