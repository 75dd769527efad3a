"""Engine section: ms per clip of ONNX Runtime vs PyTorch eager on the same model, GFLOP/s and the
fraction of the machine's peak and of the measured sgemm ceiling, ORT settings tried, int8 QDQ, and
ORT's own profile (time per operator type) to say where the time goes."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.graphs import ModelSpec, build_torch_model
from bench.stats import Summary, time_repeats
from videocore.contract import INPUT_NAME, GraphMetadata

LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def ort_session(
    path: Path, level: str = "all", threads: int = 0, profile: str | None = None, spinning: bool = True
):
    """A CPU session configured like the service's (``service.engine``) unless told otherwise."""
    options = ort.SessionOptions()
    if not spinning:  # idle intra-op threads sleep instead of busy-waiting (helps on shared cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_metadata(path: Path) -> GraphMetadata:
    session = ort_session(path, "disable", 1)
    return GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)


def random_clips(batch: int, meta: GraphMetadata, seed: int = 0) -> np.ndarray:
    shape = (batch, meta.frames, meta.input_size, meta.input_size, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def per_clip_ms(
    run: Callable[[], object], batch: int, budget_s: float, min_repeats: int, warmup: int = 1
) -> Summary:
    seconds = time_repeats(run, min_repeats=min_repeats, max_repeats=10, budget_s=budget_s, warmup=warmup)
    return seconds.scaled(1000.0 / batch)


def torch_runner(spec: ModelSpec, meta: GraphMetadata, trial: bool = True):
    """PyTorch eager on the same computation as the graph (uint8 frames -> probabilities), with the
    better of 1 and all-cores intra-op threads at batch 1 (OpenMP's spinning threads suffer badly
    when other processes share the cores; PyTorch gets its best setting, as ORT does)."""
    import torch

    from export.graph import FramesToPredictions

    model = build_torch_model(spec.config, meta.frames)
    wrapper = FramesToPredictions(model, meta.mean, meta.std, meta.scale).eval()

    def run(frames: np.ndarray) -> None:
        with torch.inference_mode():
            wrapper(torch.from_numpy(frames))

    cores = os.cpu_count() or 1
    threads = cores
    if trial and cores > 1:
        clip = random_clips(1, meta)
        timings = {}
        for candidate in (cores, 1):
            torch.set_num_threads(candidate)
            timings[candidate] = time_repeats(lambda: run(clip), min_repeats=2, max_repeats=2).median
        threads = min(timings, key=lambda t: timings[t])
    torch.set_num_threads(threads)
    return run, model, threads


def gflop_per_clip(model, meta: GraphMetadata) -> float:
    from model.summary import count_macs

    return 2.0 * count_macs(model, meta.frames, meta.input_size) / 1e9


def ort_profile(session_path: Path, frames: np.ndarray, runs: int = 2) -> dict[str, float]:
    """Share of ORT's kernel time per operator type over ``runs`` runs (ORT's JSON profiler)."""
    with tempfile.TemporaryDirectory(prefix="sda-ort-prof-") as tmp:
        session = ort_session(session_path, profile=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            session.run(None, {INPUT_NAME: frames})
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"].get("op_name", "?")] += float(event.get("dur", 0))
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda item: -item[1])
    return {op: round(100.0 * us / total, 1) for op, us in ranked[:10]}


def settings_trial(path: Path, meta: GraphMetadata, budget_s: float, min_repeats: int) -> list[dict]:
    """ORT's CPU knobs at batch 1: optimisation level x intra-op threads. The winner is reported."""
    frames = random_clips(1, meta)
    cores = os.cpu_count() or 1
    # ORT_DISABLE_ALL is left out: it is far slower than basic on R50, and a trial costs ~10 s.
    trials = [(level, cores, True) for level in ("basic", "extended", "all")]
    trials += [("all", 1, True), ("all", cores, False)]
    results = []
    for level, threads, spinning in trials:
        session = ort_session(path, level, threads, spinning=spinning)
        ms = per_clip_ms(lambda s=session: s.run(None, {INPUT_NAME: frames}), 1, budget_s, min_repeats)
        results.append(
            {"level": level, "threads": threads, "spinning": spinning, "ms_per_clip": ms.to_dict(1)}
        )
    return results


def measure_model(
    spec: ModelSpec,
    frames: int,
    batches: tuple[int, ...],
    *,
    budget_s: float,
    min_repeats: int,
    sgemm_gflops: float,
    peak_gflops: float,
    int8: bool,
    log: Callable[[str], None],
    torch_max_batch: int = 1 << 30,
) -> dict[str, object]:
    """ORT (service settings) and PyTorch eager, per batch size; int8 when its graph exists."""
    path = spec.graphs[frames]
    meta = graph_metadata(path)
    session = ort_session(path)
    torch_run, model, torch_threads = torch_runner(spec, meta)
    gflop = gflop_per_clip(model, meta)
    int8_session = None
    if int8 and spec.int8_graphs.get(frames) and spec.int8_graphs[frames].is_file():
        int8_session = ort_session(spec.int8_graphs[frames])
    rows = []
    for batch in batches:
        clips = random_clips(batch, meta)
        # Sessions are warm after batch 1; a larger batch's first run is timed too (it is in min/max),
        # since a warm-up run of full R50 at batch 16 costs as much as a repeat.
        warm = 1 if batch == batches[0] else 0
        ort_ms = per_clip_ms(
            lambda c=clips: session.run(None, {INPUT_NAME: c}), batch, budget_s, min_repeats, warm
        )
        torch_ms = (
            per_clip_ms(lambda c=clips: torch_run(c), batch, budget_s, min_repeats, warm)
            if batch <= torch_max_batch
            else None
        )
        ort_gflops = ort_ms.inverse(gflop * 1000.0)
        row: dict[str, object] = {
            "batch": batch,
            "ort_ms_per_clip": ort_ms.to_dict(2),
            "ort_gflops": ort_gflops.to_dict(1),
            "ort_fraction_of_peak": round(ort_gflops.median / peak_gflops, 3),
            "ort_fraction_of_sgemm": round(ort_gflops.median / sgemm_gflops, 3),
        }
        if torch_ms is not None:
            row["torch_ms_per_clip"] = torch_ms.to_dict(2)
            row["ort_speedup_vs_torch"] = round(torch_ms.median / ort_ms.median, 3)
            row["torch_gflops"] = round(gflop * 1000.0 / torch_ms.median, 1)
        if int8_session is not None:
            int8_ms = per_clip_ms(
                lambda c=clips: int8_session.run(None, {INPUT_NAME: c}), batch, budget_s, min_repeats, warm
            )
            row["int8_ms_per_clip"] = int8_ms.to_dict(2)
            row["int8_speedup_vs_fp32"] = round(ort_ms.median / int8_ms.median, 3)
        log(
            f"    {meta.frames}f batch {batch}: ORT {ort_ms.median:.1f} ms/clip, "
            f"PyTorch {torch_ms.median if torch_ms else float('nan'):.1f}"
            + (f", int8 {row['int8_ms_per_clip']['median']:.1f}" if "int8_ms_per_clip" in row else "")
        )
        rows.append(row)
    return {
        "model": spec.label,
        "graph": str(path.relative_to(path.parents[2]) if len(path.parents) > 2 else path),
        "frames": frames,
        "input_size": meta.input_size,
        "gflop_per_clip": round(gflop, 3),
        "same_weights": spec.same_weights,
        "torch_threads": torch_threads,
        "batches": rows,
    }
