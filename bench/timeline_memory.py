"""Peak memory of one timeline decode: ``probe_and_decode`` (every window's frames returned at once)
against ``decode_windows`` (each window handed on as soon as it is decoded). 60 s of 320x240 H.264 at
30 fps, windows of 4 s every 2 s, 16 frames each, resized to a 256-pixel short side (an R50 model's).

    python bench/timeline_memory.py
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.evaluate import encode_mp4
from videocore.decode import decode_windows, probe_and_decode
from videocore.timeline import plan_windows


def main() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, 240, 320, 3), dtype=np.uint8)
    video = encode_mp4(np.stack([np.roll(base[i % 8], i, axis=1) for i in range(1800)]), 30)
    plan = plan_windows(1800, 30.0, 60.0, 16, 4.0, 2.0)
    indices = [w.indices for w in plan]

    def measure(name: str, decode: Callable[[], object]) -> None:
        tracemalloc.start()
        started = time.perf_counter()
        decode()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name}: {len(plan)} windows x 16 frames, peak traced {peak / 2**20:.1f} MiB, "
              f"{time.perf_counter() - started:.2f} s")  # fmt: skip

    measure("probe_and_decode", lambda: probe_and_decode(video, lambda n: indices, resize_short_side=256))
    measure(
        "decode_windows",
        lambda: decode_windows(video, lambda info: indices, lambda *a: None, resize_short_side=256),
    )


if __name__ == "__main__":
    main()
