"""The machine's fp32 and int8 GEMM throughput: the rooflines the float and integer backends' GOP/s
are compared to (fp32: torch.mm; int8: fbgemm's u8 x s8 quantized linear, VNNI where the CPU has it).

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
    return _best_rate(lambda: torch.mm(a, b), 2 * n**3)


def _best_rate(run, ops_per_run: float) -> float:
    for _ in range(3):
        run()
    best = 0.0
    for _ in range(WINDOWS):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < WINDOW_SECONDS:
            run()
            runs += 1
        best = max(best, ops_per_run * runs / (time.perf_counter() - start) / 1e9)
    return best


def int8_gemm_gops(threads: int, n: int = GEMM_N) -> float:
    """u8 activations x s8 weights -> requantised u8, n x n x n, best window (GOP/s, 2 ops per MAC)."""
    import warnings

    import torch

    warnings.simplefilter("ignore", UserWarning)  # quantized tensors' deprecation notice: still the fbgemm path
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "fbgemm"
    x = torch.quantize_per_tensor(torch.rand(n, n), 1 / 255, 0, torch.quint8)
    w = torch.quantize_per_tensor(torch.randn(n, n), 0.02, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(w, None)
    return _best_rate(lambda: torch.ops.quantized.linear(x, packed, 1.0, 0), 2 * n**3)


if __name__ == "__main__":
    threads = int(sys.argv[1])
    print(json.dumps({"gemm_gflops": gemm_gflops(threads), "int8_gemm_gops": int8_gemm_gops(threads), "n": GEMM_N,
                      "library": "torch.mm fp32; fbgemm quantized linear u8 x s8"}))
