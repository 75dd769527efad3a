"""The benchmark's outputs: the targets (met or missed), a markdown table, and the latency plot."""

from __future__ import annotations

from pathlib import Path


def strip_latencies(results: dict) -> dict[str, list[list[float]]]:
    """Remove the raw per-request latencies from the JSON (kept for the plot only)."""
    kept: dict[str, list[list[float]]] = {}
    for side in ("ours", "naive", "ours_default_frames"):
        rows = results.get("end_to_end", {}).get(side, [])
        kept[side] = [row.pop("_latencies", []) for row in rows]
    return kept


def _target(name: str, goal: str, measured: float | None, ok: bool | None, detail: str) -> dict[str, object]:
    return {"target": name, "goal": goal, "measured": measured, "met": ok, "detail": detail}


def targets(results: dict) -> list[dict[str, object]]:
    """Every target of issue #6 with the number it is judged on (None when not measured)."""
    out = []
    models = results["engine"]["models"]
    first = models[0]
    b1 = first["batches"][0]
    out.append(
        _target(
            "ORT vs PyTorch eager",
            ">= 1.3x per clip",
            b1["ort_speedup_vs_torch"],
            b1["ort_speedup_vs_torch"] >= 1.3,
            f"{first['model']} {first['frames']}f batch {b1['batch']}",
        )
    )
    best = max(first["batches"], key=lambda r: r["ort_fraction_of_sgemm"])
    out.append(
        _target(
            "share of the sgemm ceiling",
            ">= 60%",
            best["ort_fraction_of_sgemm"],
            best["ort_fraction_of_sgemm"] >= 0.6,
            f"{first['model']} {first['frames']}f batch {best['batch']}: "
            f"{best['ort_gflops']['median']} GFLOP/s",
        )
    )
    if "int8_speedup_vs_fp32" in b1:
        out.append(
            _target(
                "int8 QDQ vs fp32",
                ">= 1.6x",
                b1["int8_speedup_vs_fp32"],
                b1["int8_speedup_vs_fp32"] >= 1.6,
                f"{first['model']} {first['frames']}f batch {b1['batch']}",
            )
        )
    accuracy = results["engine"].get("int8_accuracy_default_model", {})
    if accuracy:
        drops = {
            k: v["fp32_top1"] - v["int8_top1"] for k, v in accuracy.items() if v.get("fp32_top1") is not None
        }
        worst = max(drops.values())
        out.append(
            _target(
                "int8 top-1 loss (synthetic validation)",
                "<= 1 point",
                round(worst, 2),
                worst <= 1.0,
                ", ".join(
                    f"{k}: {v['fp32_top1']:.1f} -> {v['int8_top1']:.1f} % on {v['eval_clips']} clips"
                    for k, v in accuracy.items()
                ),
            )
        )
    long_clip = next((d for d in results["decode"] if "1080p" in d["clip"]), None)
    if long_clip:
        out.append(
            _target(
                "sampler vs decode-all-RGB, 1080p 60 s",
                ">= 2x",
                long_clip["speedup"],
                long_clip["speedup"] >= 2,
                f"ours {long_clip['ours_ms']['median']} ms, "
                f"all-RGB {long_clip['decode_all_rgb_ms']['median']} ms, "
                f"lower bound {long_clip['lower_bound_ms']} ms",
            )
        )
    e2e = results["end_to_end"]
    ours = max(row["clips_per_s"] for row in e2e["ours"])
    naive = max(row["clips_per_s"] for row in e2e["naive"])
    saturation = ours / e2e["engine_only_clips_per_s"]
    out.append(
        _target(
            "service at saturation vs engine only",
            ">= 85%",
            round(saturation, 3),
            saturation >= 0.85,
            f"{ours} vs {e2e['engine_only_clips_per_s']} clips/s "
            f"(engine only, batch {e2e['engine_only_batch']})",
        )
    )
    out.append(
        _target(
            "end to end vs naive baseline",
            ">= 2x clips/s",
            round(ours / naive, 2),
            ours / naive >= 2,
            f"{ours} vs {naive} clips/s (best concurrency of each)",
        )
    )
    overhead = e2e["overhead"]["p50_ms"]
    out.append(
        _target("HTTP+JSON overhead", "<= 10 ms p50", overhead, overhead <= 10, e2e["overhead"]["rule"])
    )
    growth = e2e["memory_mb"]["growth"]
    out.append(
        _target(
            "RSS growth",
            f"<= 50 MB after {e2e['memory_mb']['extra_requests']} requests",
            growth,
            growth <= 50,
            f"{e2e['memory_mb']['before_extra_requests']} -> {e2e['memory_mb']['after_extra_requests']} MB",
        )
    )
    return out


def _mmm(summary: dict, digits: int = 1) -> str:
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f})"


def markdown(results: dict) -> str:
    m = results["machine"]
    cpu = m["cpu"]
    lines = [
        f"Machine: {cpu['model']} (family {cpu['family']}), {cpu['cores']} cores, {cpu['clock_ghz']} GHz, "
        f"{cpu['simd']}, {cpu['memory_gib']} GiB; FP32 peak {cpu['fp32_peak_gflops']} GFLOP/s "
        f"({cpu['peak_formula']}); sgemm {m['sgemm']['size']}² ceiling {_mmm(m['sgemm']['gflops'])} GFLOP/s; "
        f"GPU: {m['gpu'] or 'none'}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}.",
        "Figures: median (min–max) over repeats.",
        "",
        "**Engine** (ms per clip; ORT with the service's settings; GFLOP/s = 2 × MACs / time)",
        "",
        "| model | frames | batch | ORT ms/clip | PyTorch ms/clip | ORT speed-up | ORT GFLOP/s | of peak "
        "| of sgemm | int8 ms/clip | int8 speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in results["engine"]["models"]:
        for row in model["batches"]:
            int8 = _mmm(row["int8_ms_per_clip"]) if "int8_ms_per_clip" in row else "—"
            torch = _mmm(row["torch_ms_per_clip"]) if "torch_ms_per_clip" in row else "not run"
            speedup = f"{row['ort_speedup_vs_torch']:.2f}×" if "ort_speedup_vs_torch" in row else "—"
            lines.append(
                f"| {model['model']} | {model['frames']} | {row['batch']} | {_mmm(row['ort_ms_per_clip'])} | "
                f"{torch} | {speedup} | "
                f"{_mmm(row['ort_gflops'])} | "
                f"{row['ort_fraction_of_peak']:.0%} | {row['ort_fraction_of_sgemm']:.0%} | {int8} | "
                f"{row.get('int8_speedup_vs_fp32', 0):.2f}× |".replace("| 0.00× |", "| — |")
            )
    trial = results["engine"]["ort_settings_trial"]
    lines += ["", f"**ORT settings** ({trial['model']}, {trial['frames']}f, batch 1, ms/clip)", ""]
    lines += ["| optimisation level | threads | spinning | ms/clip |", "|---|---|---|---|"]
    lines += [
        f"| {r['level']} | {r['threads']} | {r['spinning']} | {_mmm(r['ms_per_clip'])} |"
        for r in trial["results"]
    ]
    for key, what in (
        ("ort_profile_op_share_percent", "fp32"),
        ("ort_profile_int8_op_share_percent", "int8"),
    ):
        if key in results["engine"]:
            shares = ", ".join(f"{k} {v}%" for k, v in results["engine"][key].items())
            lines += ["", f"ORT profile, {what} graph (share of kernel time per operator): {shares}"]
    lines += ["", "**Decode + sample** (8 frames, ms)", ""]
    lines += [
        "| clip | frames (keyframes) | ours | decode all to RGB | speed-up | lower bound |",
        "|---|---|---|---|---|---|",
    ]
    for d in results["decode"]:
        lines.append(
            f"| {d['description']} | {d['frames']} ({d['keyframes']}) | {_mmm(d['ours_ms'])} | "
            f"{_mmm(d['decode_all_rgb_ms'])} | {d['speedup']:.2f}× | {d['lower_bound_ms']:.0f} |"
        )
    e2e = results["end_to_end"]
    lines += ["", f"**End to end over HTTP** ({e2e['model']}, {e2e['frames']} frames, {e2e['clip']})", ""]
    lines += [
        "| server | concurrency | requests | p50 ms | p95 ms | p99 ms | clips/s |",
        "|---|---|---|---|---|---|---|",
    ]
    sides = {"ours": "ours", "naive": "naive"}
    if "ours_default_frames" in e2e:
        sides["ours_default_frames"] = f"ours, no `frames` (the model's {e2e['default_frames']})"
    for side, name in sides.items():
        for row in e2e[side]:
            lat = row["latency_ms"]
            lines.append(
                f"| {name} | {row['concurrency']} | {row['requests']} | {lat['p50']} | {lat['p95']} | "
                f"{lat['p99']} | "
                f"{row['clips_per_s']} |"
            )
    mem = e2e["memory_mb"]
    lines += [
        "",
        f"Overhead (HTTP + JSON + preprocess + queue) p50 {e2e['overhead']['p50_ms']} ms; "
        f"engine only {e2e['engine_only_clips_per_s']} clips/s (batch {e2e['engine_only_batch']}). "
        f"Memory (ours): {mem['at_rest']} MB at rest, {mem['peak_under_load']} MB peak under load, "
        f"{mem['before_extra_requests']} → {mem['after_extra_requests']} MB over "
        f"{mem['extra_requests']} more requests.",
    ]
    profile = e2e.get("profile_ours", {})
    if "share_percent" in profile:
        lines.append(
            f"py-spy on our server at the highest concurrency ({profile['samples']} samples): "
            + ", ".join(f"{k} {v}%" for k, v in profile["share_percent"].items())
        )
    lines += ["", "**Targets**", "", "| target | goal | measured | met | on |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {met} | {t['detail']} |")
    return "\n".join(lines) + "\n"


def plot_latency(results: dict, latencies: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = results["end_to_end"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for side, colour in (("ours", "tab:blue"), ("naive", "tab:red")):
        rows = e2e[side]
        x = [row["concurrency"] for row in rows]
        for q, style in (("p50", "-o"), ("p95", "--^"), ("p99", ":v")):
            left.plot(x, [row["latency_ms"][q] for row in rows], style, color=colour, label=f"{side} {q}")
        right.plot(x, [row["clips_per_s"] for row in rows], "-o", color=colour, label=side)
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xticks(
            [row["concurrency"] for row in e2e["ours"]], [str(r["concurrency"]) for r in e2e["ours"]]
        )
        axes.set_xlabel("concurrent clients")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    left.set_ylabel("latency (ms)")
    left.set_yscale("log")
    right.set_ylabel("clips/s")
    figure.suptitle(f"{e2e['model']}, {e2e['clip']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
