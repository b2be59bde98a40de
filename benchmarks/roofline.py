"""The machine's fp32 GEMM throughput, as the roofline ONNX Runtime's GFLOP/s are compared to.

Run in its own process (`python -m benchmarks.roofline THREADS`) so its thread pool is alone.
"""

from __future__ import annotations

import json
import sys
import time

GEMM_N = 2048
WINDOWS = 5
WINDOW_SECONDS = 0.5


def gemm_gflops(threads: int, n: int = GEMM_N) -> float:
    """Best of several short windows: a roofline is the peak the machine reaches, not its average
    under whatever else is running."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(WINDOWS):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < WINDOW_SECONDS:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * n**3 * runs / (time.perf_counter() - start) / 1e9)
    return best


if __name__ == "__main__":
    print(json.dumps({"gemm_gflops": gemm_gflops(int(sys.argv[1])), "n": GEMM_N, "library": "torch.mm fp32"}))
