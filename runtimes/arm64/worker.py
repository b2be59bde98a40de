"""Runs INSIDE the emulated aarch64 Python: opens one artifact in its arm64 runtime and runs a batch.
The same script runs natively on this machine to measure memory (benchmarks/memory.py).

It imports nothing of the project (the emulated Python has only numpy and the runtimes' arm64
wheels); the host runner (runtimes/arm64/runner.py) writes what it needs into ``request.json``:

    {"artifact": path, "runtime": "litert"|"onnxruntime", "layout": "NCHW"|"NHWC", "threads": 1,
     "input_name": ..., "output_name": ..., "signature": ..., "inputs": path.npy, "outputs": path.npy,
     "warmup": bool, "first_frame": bool, "steady": bool, "cache": null | {"path": ..., "phase": "write"|"read"},
     "maps": null | path}

Spans are bracketed by two calls of an otherwise unused syscall that the counting plugin watches
(runtimes/arm64/insn_count.c), so imports are never counted. ``first_frame``: the first span runs from
before the file is opened to the first result (what an app pays before its first frame); then, when
``steady``, one span per input. ``cache``: open through the runtime's weight cache at that path --
LiteRT's XNNPACK weight cache (the CompiledModel API's ``xnnpack_weight_cache_path``; the Interpreter API
has no such option), ONNX Runtime's optimized model saved with its pre-packed weights
(``session.save_external_prepacked_constant_initializers``) -- "write" fills it, "read" starts from it.
``maps``: write the process's memory map there at the end (the host maps profiled addresses to symbols).
The printed JSON line has the peak resident memory at three points (``VmHWM``, kB): after the imports,
after opening, after the first result; natively these are this machine's figures.
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


def peak_rss_kb() -> int:
    """This process's peak resident memory so far (VmHWM; 0 where /proc has no such line)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def litert_environment():
    """LiteRT's environment (accelerator registry) for the CompiledModel API, made before any span: an app
    makes it once per process, not per model."""
    from ai_edge_litert import compiled_model
    from ai_edge_litert.environment import Environment, EnvironmentOptions

    return Environment.create(options=EnvironmentOptions(runtime_path=os.path.dirname(compiled_model.__file__)))


def open_cached(req: dict, to_layout, environment):
    """predict through the runtime's weight cache (module docstring)."""
    import numpy as np

    cache = req["cache"]
    if req["runtime"] == "litert":
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        options = Options(HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=req["threads"],
                                                                          xnnpack_weight_cache_path=cache["path"]))
        model = CompiledModel.from_file(req["artifact"], environment=environment, options=options)
        key = req["signature"]
        inputs = {req["input_name"]: model.create_input_buffer_by_name(key, req["input_name"])}
        outputs = {req["output_name"]: model.create_output_buffer_by_name(key, req["output_name"])}
        shape = model.get_output_tensor_details(key)[req["output_name"]]["shape"]

        def predict(x):
            inputs[req["input_name"]].write(to_layout(x))
            model.run_by_name(key, inputs, outputs)
            return outputs[req["output_name"]].read(int(np.prod(shape)), np.float32).reshape(shape)

        return predict
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = req["threads"]
    options.inter_op_num_threads = 1
    if cache["phase"] == "write":
        path = req["artifact"]
        if path.endswith(".ort"):
            options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
        options.optimized_model_filepath = cache["path"]
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         os.path.basename(cache["path"]) + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
        options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    else:  # already optimized for this CPU: load as saved
        path = cache["path"]
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {req["input_name"]: to_layout(x)})[0]


def open_predict(req: dict, environment=None):
    """predict(x NCHW) -> joints, in the artifact's runtime with the host runner's options."""
    import numpy as np

    layout = req["layout"]

    def to_layout(x):
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NHWC" else x

    if req.get("cache"):
        return open_cached(req, to_layout, environment)
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
    inputs = np.load(req["inputs"])
    first = np.ascontiguousarray(inputs[:1], dtype=np.float32)
    environment = litert_environment() if req.get("cache") and req["runtime"] == "litert" else None
    if req["runtime"] == "litert":
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (imports are not what a frame costs)
    else:
        import onnxruntime  # noqa: F401
    rss = {"imported_kb": peak_rss_kb()}
    first_frame = req.get("first_frame", False)
    started = time.perf_counter()
    if first_frame:
        mark(1)
    predict = open_predict(req, environment)
    opened = time.perf_counter()
    rss["opened_kb"] = peak_rss_kb()
    outputs = []
    if first_frame or req.get("warmup"):  # counted runs: the first inference's one-off work is not the steady state
        y = np.asarray(predict(first), dtype=np.float32)
        if first_frame:
            mark(2)
        outputs.append(y)
    rss["first_result_kb"] = peak_rss_kb()
    if req.get("steady", True):
        outputs = []
        for x in inputs:
            x = np.ascontiguousarray(x[None], dtype=np.float32)
            mark(1)
            y = predict(x)
            mark(2)
            outputs.append(np.asarray(y, dtype=np.float32))
    np.save(req["outputs"] + ".partial.npy", np.concatenate(outputs))
    os.replace(req["outputs"] + ".partial.npy", req["outputs"])
    if req.get("maps"):
        with open("/proc/self/maps") as f, open(req["maps"], "w") as out:
            out.write(f.read())
    print(json.dumps({"open_seconds": opened - started, "run_seconds": time.perf_counter() - opened,
                      "peak_rss": rss, **versions()}))


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        import numpy  # noqa: F401  (the imports are the check)
        import onnxruntime  # noqa: F401
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401

        print(json.dumps(versions()))
    else:
        run(sys.argv[1])
