"""The machine the numbers come from: CPU model, cores, the FP32 peak from clock x FMA width, and the
practical ceiling a large fp32 matrix product reaches here (the sgemm ceiling)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np

from bench.stats import time_repeats


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            fields.setdefault(key, value)
    return fields


def cpu_description() -> dict[str, object]:
    """Model, cores, clock and the theoretical FP32 peak.

    peak = cores x GHz x (SIMD fp32 lanes x 2 FLOP per FMA x FMA units). The lanes come from the CPU
    flags (AVX-512: 16, AVX2: 8, SSE: 4); two FMA pipes per core is what every x86 server core since
    Haswell / Zen 1 has, and is an assumption (no flag says it). The clock is the nominal one
    /proc/cpuinfo reports; a turbo clock would raise the real peak, so the fraction is an upper bound.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mhz = float(info.get("cpu MHz", "0") or 0)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if "fma" in flags or "avx512f" in flags else 1
    flops_per_cycle = lanes * 2 * fma_units
    model = info.get("model name") or platform.processor() or "unknown"
    return {
        "model": model,
        "family": info.get("cpu family"),
        "cores": cores,
        "clock_ghz": round(mhz / 1000, 3),
        "simd": "AVX-512" if lanes == 16 else "AVX2+FMA" if lanes == 8 and fma_units == 2 else "SSE",
        "fp32_flops_per_cycle_per_core": flops_per_cycle,
        "fp32_peak_gflops": round(cores * mhz / 1000 * flops_per_cycle, 1),
        "peak_formula": f"{cores} cores x {mhz / 1000:.3f} GHz x {lanes} lanes x 2 x {fma_units} FMA pipes",
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def gpu_description() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def sgemm_ceiling(size: int, *, budget_s: float) -> dict[str, object]:
    """GFLOP/s of a size x size fp32 matrix product in PyTorch (MKL/oneDNN, all cores)."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    seconds = time_repeats(lambda: torch.mm(a, b), min_repeats=3, max_repeats=20, budget_s=budget_s)
    flop = 2.0 * size**3
    return {
        "size": size,
        "threads": torch.get_num_threads(),
        "gflops": seconds.inverse(flop / 1e9).to_dict(1),
    }


def library_versions() -> dict[str, str]:
    versions = {"numpy": np.__version__}
    for name in ("torch", "onnxruntime", "onnx", "av", "fastapi", "uvicorn"):
        try:
            module = __import__(name)
            versions[name] = re.sub(r"\+.*", "", getattr(module, "__version__", "?"))
        except ImportError:
            continue
    return versions
