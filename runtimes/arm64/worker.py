"""Runs INSIDE the emulated aarch64 Python: opens one artifact in its arm64 runtime and runs a batch.

It imports nothing of the project (the emulated Python has only numpy and the runtimes' arm64
wheels); the host runner (runtimes/arm64/runner.py) writes what it needs into ``request.json``:

    {"artifact": path, "runtime": "litert"|"onnxruntime", "layout": "NCHW"|"NHWC", "threads": 1,
     "input_name": ..., "output_name": ..., "signature": ..., "inputs": path.npy, "outputs": path.npy,
     "warmup": bool}

Each inference is bracketed by two calls of an otherwise unused syscall that the counting plugin
watches (runtimes/arm64/insn_count.c), so imports and model loading are not counted.
``--self-check`` prints the Python and package versions as one JSON line.
"""

import ctypes
import json
import os
import sys
import time

MARK_SYSCALL = 0x4E4F  # the plugin's MARK_SYSCALL; Linux on arm64 has no such call (-ENOSYS)
_libc = ctypes.CDLL(None, use_errno=True)


def mark(point: int) -> None:
    _libc.syscall(MARK_SYSCALL, point)


def versions() -> dict:
    from importlib.metadata import version

    packages = {name: version(name) for name in ("numpy", "ai-edge-litert", "onnxruntime")}
    return {"python": sys.version.split()[0], "machine": os.uname().machine, "packages": packages}


def open_predict(req: dict):
    """predict(x NCHW) -> joints, in the artifact's runtime with the host runner's options."""
    import numpy as np

    layout = req["layout"]

    def to_layout(x):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x

    if req["runtime"] == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=req["artifact"], num_threads=req["threads"])
        it.allocate_tensors()
        runner = it.get_signature_runner(req["signature"])
        return lambda x: runner(**{req["input_name"]: to_layout(x)})[req["output_name"]]
    if req["runtime"] == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = req["threads"]
        options.inter_op_num_threads = 1
        if req["artifact"].endswith(".ort"):  # as runtimes/onnxrt.py: replay the file's saved optimisations
            options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
        session = ort.InferenceSession(req["artifact"], options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {req["input_name"]: to_layout(x)})[0]
    raise SystemExit(f"runtime {req['runtime']!r} does not run on the arm64 target")


def run(request_path: str) -> None:
    import numpy as np

    with open(request_path) as f:
        req = json.load(f)
    started = time.perf_counter()
    predict = open_predict(req)
    opened = time.perf_counter()
    inputs = np.load(req["inputs"])
    if req.get("warmup"):  # counted runs: the first inference's one-off allocations are not the steady state
        predict(np.ascontiguousarray(inputs[:1], dtype=np.float32))
    outputs = []
    for x in inputs:
        x = np.ascontiguousarray(x[None], dtype=np.float32)
        mark(1)
        y = predict(x)
        mark(2)
        outputs.append(np.asarray(y, dtype=np.float32))
    np.save(req["outputs"] + ".partial.npy", np.concatenate(outputs))
    os.replace(req["outputs"] + ".partial.npy", req["outputs"])
    print(json.dumps({"open_seconds": opened - started, "run_seconds": time.perf_counter() - opened,
                      **versions()}))


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        import numpy  # noqa: F401  (the imports are the check)
        import onnxruntime  # noqa: F401
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401

        print(json.dumps(versions()))
    else:
        run(sys.argv[1])
