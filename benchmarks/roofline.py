"""The machine's fp32 GEMM throughput, as the roofline ONNX Runtime's GFLOP/s are compared to.

Run in its own process (`python -m benchmarks.roofline THREADS`) so its thread pool is alone.
"""

from __future__ import annotations

import json
import sys
import time

GEMM_N = 1024
GEMM_SECONDS = 2.0


def gemm_gflops(threads: int, n: int = GEMM_N, seconds: float = GEMM_SECONDS) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


if __name__ == "__main__":
    print(json.dumps({"gemm_gflops": gemm_gflops(int(sys.argv[1])), "n": GEMM_N, "library": "torch.mm fp32"}))
