"""The machine's fp32 and int8 GEMM throughput: the rooflines the float and integer backends' GOP/s
are compared to. Each is the best of two libraries, n x n x n, best of several short windows:

- fp32: torch.mm (MKL) and ONNX Runtime's MatMul (MLAS). On AMD CPUs MKL takes its AVX2 path:
  measured on a 2-core AVX-512 EPYC, torch.mm 218 GFLOP/s, ORT 456 -- a roofline from MKL alone
  put ONNX Runtime at 152 % of "the machine";
- int8: fbgemm's u8 x s8 quantized linear (VNNI where the CPU has it) and ORT's MatMulInteger.

Run in its own process (`python -m benchmarks.roofline THREADS`) so its thread pool is alone.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import numpy as np

GEMM_N = 2048
WINDOWS = 5
WINDOW_SECONDS = 0.3


def best_rate(run: Callable[[], object], ops_per_run: float) -> float:
    """Best of several short windows, G ops/s: a roofline is the peak the machine reaches, not its
    average under whatever else is running."""
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


def torch_fp32(threads: int, n: int = GEMM_N) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return best_rate(lambda: torch.mm(a, b), 2 * n**3)


def fbgemm_int8(threads: int, n: int = GEMM_N) -> float:
    """u8 activations x s8 weights -> requantised u8 (2 ops per MAC)."""
    import warnings

    import torch

    warnings.simplefilter("ignore", UserWarning)  # quantized tensors' deprecation notice: still the fbgemm path
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "fbgemm"
    x = torch.quantize_per_tensor(torch.rand(n, n), 1 / 255, 0, torch.quint8)
    w = torch.quantize_per_tensor(torch.randn(n, n), 0.02, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(w, None)
    return best_rate(lambda: torch.ops.quantized.linear(x, packed, 1.0, 0), 2 * n**3)


def _ort_matmul(op: str, a: np.ndarray, b: np.ndarray, threads: int) -> float:
    from onnx import TensorProto, helper, numpy_helper

    from runtimes.onnxrt import inference_session

    n = a.shape[0]
    types = {np.float32: TensorProto.FLOAT, np.uint8: TensorProto.UINT8}
    out_type = TensorProto.FLOAT if op == "MatMul" else TensorProto.INT32
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["Y"])], "gemm",
                              [helper.make_tensor_value_info("A", types[a.dtype.type], [n, n])],
                              [helper.make_tensor_value_info("Y", out_type, [n, n])], [numpy_helper.from_array(b, "B")])
    session = inference_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                .SerializeToString(), threads)
    return best_rate(lambda: session.run(None, {"A": a}), 2 * n**3)


def ort_fp32(threads: int, n: int = GEMM_N) -> float:
    rng = np.random.default_rng(0)
    return _ort_matmul("MatMul", rng.random((n, n), np.float32), rng.random((n, n), np.float32), threads)


def ort_int8(threads: int, n: int = GEMM_N) -> float:
    rng = np.random.default_rng(0)
    return _ort_matmul("MatMulInteger", rng.integers(0, 255, (n, n), dtype=np.uint8),
                       rng.integers(-127, 127, (n, n), dtype=np.int8), threads)


def rooflines(threads: int) -> dict:
    fp32 = {"torch.mm (MKL)": torch_fp32(threads), "onnxruntime MatMul (MLAS)": ort_fp32(threads)}
    int8 = {"fbgemm u8 x s8": fbgemm_int8(threads), "onnxruntime MatMulInteger u8 x s8": ort_int8(threads)}
    best32, best8 = max(fp32, key=fp32.get), max(int8, key=int8.get)
    return {"gemm_gflops": fp32[best32], "int8_gemm_gops": int8[best8], "n": GEMM_N,
            "library": best32, "int8_library": best8, "candidates": {**fp32, **int8}}


if __name__ == "__main__":
    print(json.dumps(rooflines(int(sys.argv[1]))))
