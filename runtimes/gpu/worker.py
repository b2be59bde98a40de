"""Runs in a process of its own, started by runtimes/gpu/runner.py with the software Vulkan device in its
environment: opens one .tflite on LiteRT's GPU accelerator and runs a batch, one input at a time.

The GPU accelerator is reached through LiteRT's ``CompiledModel`` API (the wheel ships no GPU delegate for
the ``Interpreter`` of runtimes/litert.py): GPU first, the CPU for whatever the accelerator does not take,
and ``is_fully_accelerated()`` says whether it took everything. A file that crashes the accelerator or the
Vulkan driver takes this process down, not the caller. It imports nothing of the project (numpy and
ai-edge-litert only: it starts in about a second); the runner writes what it needs into ``request.json``:

    {"artifact": path, "layout": "NCHW"|"NHWC", "precision": "fp16"|"fp32", "signature": ...,
     "input_name": ..., "output_name": ..., "inputs": path.npy, "outputs": path.npy}

and reads one JSON line from stdout: whether the model is fully accelerated and the seconds spent, or
the error that stopped it (LiteRT's own ``ERROR: [file:line] ...`` lines on stderr say more).
"""

import json
import os
import sys
import time


def open_model(req: dict):
    """The compiled model, its input and output buffers and the output shape."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import GpuOptions, Options

    options = Options(HardwareAccelerator.GPU | HardwareAccelerator.CPU,
                      gpu_options=GpuOptions(enforce_f32=req["precision"] == "fp32"))
    model = CompiledModel.from_file(req["artifact"], options=options)
    key, name_in, name_out = req["signature"], req["input_name"], req["output_name"]
    signatures = model.get_signature_list()
    if key not in signatures:
        raise LookupError(f"no signature {key!r} in the file (it has {', '.join(signatures) or 'none'})")
    for role, name, names in (("input", name_in, signatures[key]["inputs"]),
                              ("output", name_out, signatures[key]["outputs"])):
        if name not in names:
            raise LookupError(f"signature {key!r} has no {role} {name!r} (it has {', '.join(names)})")
    out_shape = tuple(model.get_output_tensor_details(key)[name_out]["shape"])
    ins = {name_in: model.create_input_buffer_by_name(key, name_in)}
    outs = {name_out: model.create_output_buffer_by_name(key, name_out)}
    return model, ins, outs, out_shape


def run(request_path: str) -> None:
    import numpy as np

    with open(request_path) as f:
        req = json.load(f)
    started = time.perf_counter()
    model, ins, outs, out_shape = open_model(req)
    opened = time.perf_counter()
    (buffer_in,), (buffer_out,) = ins.values(), outs.values()
    size = int(np.prod(out_shape))
    outputs = []
    for x in np.load(req["inputs"]):
        x = np.ascontiguousarray(x[None], dtype=np.float32)
        if req["layout"] == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        buffer_in.write(x)
        model.run_by_name(req["signature"], ins, outs)
        outputs.append(buffer_out.read(size, np.float32).reshape(out_shape))
    np.save(req["outputs"] + ".partial.npy", np.concatenate(outputs))
    os.replace(req["outputs"] + ".partial.npy", req["outputs"])
    print(json.dumps({"fully_accelerated": model.is_fully_accelerated(), "open_seconds": opened - started,
                      "run_seconds": time.perf_counter() - opened}))


if __name__ == "__main__":
    try:
        run(sys.argv[1])
    except Exception as exc:  # the runner reports it, with the runtime's own ERROR lines from stderr
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
