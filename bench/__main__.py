"""python -m bench [--smoke] [--out DIR] [--prepare-only]

Prints a table and writes DIR/bench.json, DIR/bench.md and DIR/latency.png: the machine, the
engine (ORT vs PyTorch eager, GFLOP/s vs peak and sgemm ceiling, ORT settings, int8), decode +
sample, end to end over HTTP against the naive baseline, overhead, memory, and every target of
docs/performance.md met or missed. Each timed figure is a median over repeats with min and max.
``--smoke`` runs the same code paths on tiny inputs in well under a minute (CI); its numbers mean
nothing. Slow artefacts (full R50 graphs, int8 graphs, encoded clips) are cached in .bench-cache/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import decode, endtoend, engine, graphs, machine, report


@dataclass(frozen=True)
class Plan:
    """How much of everything to run: the full benchmark or the smoke run."""

    smoke: bool
    sgemm_size: int
    budget_s: float
    min_repeats: int
    r50_frames: tuple[int, ...]
    # Full R50 is ~1 s/clip here: 16 frames at batch 16, or PyTorch at batch 16, would take minutes of
    # the 12 the measurement may last (ORT ms/clip barely changes with the batch on 2 cores).
    r50_batches: dict[int, tuple[int, ...]]
    r50_torch_max_batch: int
    default_frames: tuple[int, ...]
    batches: tuple[int, ...]
    int8_calibration: int
    int8_eval: int
    clips: tuple[decode.ClipSpec, ...]
    concurrency: tuple[int, ...]
    requests: dict[int, int]
    overhead_requests: int
    memory_requests: int
    profile_s: float


FULL = Plan(
    smoke=False,
    sgemm_size=3072,
    budget_s=2.0,
    min_repeats=3,
    r50_frames=(8, 16),
    r50_batches={8: (1, 4, 16), 16: (1, 4)},
    r50_torch_max_batch=4,
    default_frames=(8, 16),
    batches=(1, 4, 16),
    int8_calibration=24,
    int8_eval=240,
    clips=decode.CLIPS,
    concurrency=(1, 4, 16),
    requests={1: 16, 4: 32, 16: 64},
    overhead_requests=20,
    memory_requests=1000,
    profile_s=6.0,
)
SMOKE = Plan(
    smoke=True,
    sgemm_size=256,
    budget_s=0.0,
    min_repeats=1,
    r50_frames=(),
    r50_batches={},
    r50_torch_max_batch=4,
    default_frames=(8,),
    batches=(1, 2),
    int8_calibration=2,
    int8_eval=4,
    clips=decode.SMOKE_CLIPS,
    concurrency=(1, 2),
    requests={1: 3, 2: 4},
    overhead_requests=2,
    memory_requests=10,
    profile_s=1.0,
)
HTTP_CLIP = decode.ClipSpec(
    "h264-480x360-4s", "H.264 480×360 30 fps 4 s", "mp4", "libx264", 480, 360, 4, 30, {"preset": "veryfast"}
)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cached_clip(spec: decode.ClipSpec, cache: Path) -> Path:
    path = cache / "clips" / f"{spec.name}.{spec.container}"
    if not path.is_file():
        log(f"  encoding {spec.description} -> {path}")
        decode.encode(spec, path)
    return path


def prepare(plan: Plan, cache: Path) -> tuple[list[graphs.ModelSpec], dict[str, object]]:
    """Everything slow and deterministic, cached: R50 graphs, int8 graphs (+ accuracy), clips."""
    from export.quantize import export_int8, quantize_graph, synthetic_inputs

    specs = [graphs.default_model(plan.default_frames)]
    if plan.r50_frames:
        specs.insert(0, graphs.r50_random(plan.r50_frames, cache, log))
    accuracy: dict[str, object] = {}
    default = specs[-1]
    for frames in plan.default_frames:
        digest = graphs.file_digest(default.graphs[frames])
        recipe = graphs.quantize_digest()
        folder = cache / f"default-int8-{digest}-{recipe}-{plan.int8_calibration}-{plan.int8_eval}"
        target = folder / f"model-{frames}f-int8.onnx"
        record = folder / "report.json"
        if not record.is_file():
            log(
                f"  int8: quantising the default model ({frames}f), "
                f"accuracy on {plan.int8_eval} synthetic clips"
            )
            folder.mkdir(parents=True, exist_ok=True)
            result = export_int8(
                default.graphs[frames],
                target,
                calibration_clips=plan.int8_calibration,
                eval_clips=plan.int8_eval,
                max_top1_drop=100.0,
                log=log,
            )
            record.write_text(json.dumps(result.to_dict(), indent=2))
        default.int8_graphs[frames] = target
        accuracy[f"{frames}f"] = json.loads(record.read_text())
    for spec in specs[:-1]:  # R50: speed only (random weights: accuracy means nothing)
        for frames, target in spec.int8_graphs.items():
            if not target.is_file():
                import onnx

                log(
                    f"  int8: quantising R50 {frames}f "
                    f"({plan.int8_calibration} calibration clips; minutes, once)"
                )
                meta = engine.graph_metadata(spec.graphs[frames])
                clips, _ = synthetic_inputs(meta, plan.int8_calibration, 20261125)
                quantised = quantize_graph(onnx.load(str(spec.graphs[frames])), clips)
                tmp = target.with_name(target.name + ".tmp")
                onnx.save(quantised, str(tmp))
                tmp.replace(target)
    for spec in (*plan.clips, HTTP_CLIP):
        cached_clip(spec, cache)
    return specs, accuracy


def run(plan: Plan, out: Path, cache: Path) -> dict[str, object]:
    started = time.perf_counter()
    log("preparing (cached after the first run)...")
    specs, int8_accuracy = prepare(plan, cache)
    results: dict[str, object] = {
        "smoke": plan.smoke,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    log("machine...")
    cpu = machine.cpu_description()
    sgemm = machine.sgemm_ceiling(plan.sgemm_size, budget_s=plan.budget_s)
    results["machine"] = {
        "cpu": cpu,
        "gpu": machine.gpu_description(),
        "sgemm": sgemm,
        "libraries": machine.library_versions(),
        "load_average_at_start": list(os.getloadavg()),
    }
    peak = float(cpu["fp32_peak_gflops"])
    ceiling = float(sgemm["gflops"]["median"])

    log("engine...")
    engine_rows = []
    for spec in specs:
        for frames in spec.graphs:
            log(f"  {spec.label}, {frames} frames")
            engine_rows.append(
                engine.measure_model(
                    spec,
                    frames,
                    plan.batches if spec is specs[-1] else plan.r50_batches[frames],
                    budget_s=plan.budget_s,
                    min_repeats=plan.min_repeats,
                    sgemm_gflops=ceiling,
                    peak_gflops=peak,
                    int8=True,
                    log=log,
                    torch_max_batch=plan.batches[-1] if spec is specs[-1] else plan.r50_torch_max_batch,
                )
            )
    first = specs[0]
    first_frames = next(iter(first.graphs))
    first_meta = engine.graph_metadata(first.graphs[first_frames])
    log(f"  ORT settings trial and profile on {first.label} {first_frames}f, batch 1")
    results["engine"] = {
        "models": engine_rows,
        "ort_settings_trial": {
            "model": first.label,
            "frames": first_frames,
            "results": engine.settings_trial(
                first.graphs[first_frames], first_meta, plan.budget_s, plan.min_repeats
            ),
        },
        "ort_profile_op_share_percent": engine.ort_profile(
            first.graphs[first_frames], engine.random_clips(1, first_meta), runs=1 if plan.smoke else 2
        ),
        "int8_accuracy_default_model": int8_accuracy,
    }
    int8_graph = first.int8_graphs.get(first_frames)
    if int8_graph is not None and int8_graph.is_file():
        results["engine"]["ort_profile_int8_op_share_percent"] = engine.ort_profile(
            int8_graph, engine.random_clips(1, first_meta), runs=1 if plan.smoke else 2
        )

    (out / "partial.json").write_text(json.dumps(results, indent=2))  # kept if a later section fails
    log("decode + sample...")
    results["decode"] = [
        decode.measure_clip(spec, cached_clip(spec, cache), 8, 256, plan.budget_s * 2, log)
        for spec in plan.clips
    ]

    (out / "partial.json").write_text(json.dumps(results, indent=2))
    log("end to end over HTTP (default model, 8 frames)...")
    results["end_to_end"] = end_to_end(plan, specs[-1], out, cache, engine_rows)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = report.targets(results)
    return results


def end_to_end(plan: Plan, spec: graphs.ModelSpec, out: Path, cache: Path, engine_rows: list) -> dict:
    video = cached_clip(HTTP_CLIP, cache).read_bytes()
    models_dir = spec.graphs[plan.default_frames[0]].parents[1]
    section: dict[str, object] = {"clip": HTTP_CLIP.description, "model": spec.label, "frames": 8}
    # Named, not left to the model's default frame count: the naive baseline serves the 8-frame graph.
    params = {"frames": 8}
    ours = endtoend.start_ours(models_dir.parent, out / "server-ours.log")
    try:
        rest = endtoend.rss_mb(ours.pid)
        endtoend.warm_up(ours.url, video, params=params)
        rows = []
        with endtoend.PeakRSS(ours.pid) as peak:
            for c in plan.concurrency:
                rows.append(endtoend.load(ours.url, video, c, plan.requests[c], params))
                log(
                    f"  ours c={c}: {rows[-1]['clips_per_s']} clips/s, p50 {rows[-1]['latency_ms']['p50']} ms"
                )
        section["ours"] = rows
        warm = endtoend.rss_mb(ours.pid)
        # What a request that names no frame count costs: the model's own default_frames (16 for the
        # embedded default model), at the concurrencies the naive baseline is compared at up to 4.
        served = endtoend.served_frames(ours.url, video)
        section["default_frames"] = served
        if served != params["frames"]:
            section["ours_default_frames"] = [
                endtoend.load(ours.url, video, c, plan.requests[c]) for c in plan.concurrency if c <= 4
            ]
        section["overhead"] = endtoend.overhead_per_request(ours.url, video, plan.overhead_requests, params)
        top = max(plan.concurrency)
        section["profile_ours"] = endtoend.py_spy_profile(
            ours.pid,
            plan.profile_s,
            lambda: endtoend.load(ours.url, video, top, plan.requests[top], params),
            out / "py-spy-ours",
        )
        before = endtoend.rss_mb(ours.pid)
        endtoend.load(ours.url, video, 4, plan.memory_requests, params)
        after = endtoend.rss_mb(ours.pid)
        section["memory_mb"] = {
            "at_rest": round(rest, 1),
            "after_warm_up_loads": round(warm, 1),
            "peak_under_load": round(peak.peak, 1),
            "before_extra_requests": round(before, 1),
            "after_extra_requests": round(after, 1),
            "extra_requests": plan.memory_requests,
            "growth": round(after - before, 1),
        }
    finally:
        ours.stop()
    naive = endtoend.start_naive(spec.graphs[plan.default_frames[0]], out / "server-naive.log")
    try:
        endtoend.warm_up(naive.url, video)
        rows = []
        for c in plan.concurrency:
            rows.append(endtoend.load(naive.url, video, c, max(2, plan.requests[c] // 2)))
            log(f"  naive c={c}: {rows[-1]['clips_per_s']} clips/s, p50 {rows[-1]['latency_ms']['p50']} ms")
        section["naive"] = rows
        section["naive_rss_mb_after"] = round(endtoend.rss_mb(naive.pid), 1)
    finally:
        naive.stop()
    # Engine-only throughput of the served graph at the service's largest batch, from the engine section.
    served = next(r for r in engine_rows if r["model"] == spec.label and r["frames"] == 8)
    best = min(served["batches"], key=lambda r: r["ort_ms_per_clip"]["median"])
    section["engine_only_clips_per_s"] = round(1000.0 / best["ort_ms_per_clip"]["median"], 2)
    section["engine_only_batch"] = best["batch"]
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny inputs, seconds; checks the code paths only"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder for the results")
    parser.add_argument("--cache", type=Path, default=graphs.DEFAULT_CACHE, help="exported graphs, clips")
    parser.add_argument("--prepare-only", action="store_true", help="build the cache, measure nothing")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        prepare(plan, args.cache)
        return 0
    results = run(plan, args.out, args.cache)
    latencies = report.strip_latencies(results)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report.markdown(results)
    (args.out / "bench.md").write_text(table)
    report.plot_latency(results, latencies, args.out / "latency.png")
    print(table)
    log(f"wrote {args.out / 'bench.json'}, {args.out / 'bench.md'}, {args.out / 'latency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
