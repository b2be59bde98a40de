"""TFLite through ai-edge-litert (XNNPACK on by default): the one place an Interpreter is opened.

ai-edge-litert is the maintained interpreter; tflite-runtime 2.14 fails to load beside numpy 2,
and TensorFlow's own interpreter is another build. There is no fallback: the interpreter that
verified a file is the one that times it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from common.errors import RuntimeUnavailableError
from common.quiet import native_stderr_hidden
from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes.session import Session, Tensors, to_layout
from runtimes.versions import version_of

SIGNATURE_KEY = "serving_default"


def interpreter(model: Path | bytes, threads: int = 2, keep_tensors: bool = False):
    """An ai-edge-litert Interpreter for a file or flatbuffer bytes. ``keep_tensors``: every intermediate
    tensor kept readable, which needs TFLite's builtin kernels instead of the XNNPACK delegate."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeUnavailableError("ai-edge-litert is not installed: it is the TFLite runtime that verifies and "
                                      "times every .tflite (pip install -e . installs it)") from None
    options = {}
    if keep_tensors:
        from ai_edge_litert.interpreter import OpResolverType

        options = {"experimental_preserve_all_tensors": True,
                   "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."; with keep_tensors a UserWarning that
    # preserving tensors is for debugging, which is what it is used for
    with native_stderr_hidden(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if isinstance(model, (bytes, bytearray)):
            it = Interpreter(model_content=bytes(model), num_threads=threads, **options)
        else:
            it = Interpreter(model_path=str(model), num_threads=threads, **options)
        it.allocate_tensors()  # XNNPACK is applied (and announces itself) here
    return it


def label() -> str:
    return f"ai-edge-litert {version_of('ai-edge-litert')} (XNNPACK)"


def open_session(path: Path, threads: int = 2, layout: str = "NHWC") -> Session:
    """Through the `serving_default` signature: input `image` in ``layout``, output `joints`."""
    runner = interpreter(path, threads).get_signature_runner(SIGNATURE_KEY)
    return Session(lambda x: runner(**{INPUT_NAME: to_layout(x, layout)})[OUTPUT_NAME], label())


def intermediate_tensors(model: Path | bytes, x: np.ndarray, threads: int = 2, layout: str = "NHWC") -> Tensors:
    """Every tensor the model computes for ``x`` (1, 3, S, S) NCHW, in execution order, as float (integer
    tensors dequantised with their scale and zero point). Builtin kernels, not XNNPACK: the delegate
    keeps its intermediate tensors to itself."""
    it = interpreter(model, threads, keep_tensors=True)
    runner = it.get_signature_runner(SIGNATURE_KEY)
    runner(**{INPUT_NAME: to_layout(x, layout)})
    details = {d["index"]: d for d in it.get_tensor_details()}
    tensors: Tensors = []
    for op in it._get_ops_details():
        for index in op["outputs"]:
            d = details.get(int(index))
            if d is None:
                continue
            value = it.get_tensor(int(index))
            scale, zero = (d.get("quantization") or (0.0, 0))[:2]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero) * scale
            elif not np.issubdtype(value.dtype, np.floating):
                continue
            tensors.append((d["name"], value.astype(np.float32)))
    return tensors


def op_outputs(model: Path | bytes) -> list[tuple[str, list[str]]]:
    """(op type, output tensor names) of every operator, in execution order."""
    it = interpreter(model, keep_tensors=True)
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    return [(op["op_name"], [names[int(t)] for t in op["outputs"] if int(t) in names])
            for op in it._get_ops_details()]


def op_names(model: Path | bytes) -> list[str]:
    """The model's operator names in execution order (the DELEGATE nodes XNNPACK adds are not the model's)."""
    return [op["op_name"] for op in interpreter(model)._get_ops_details() if op["op_name"] != "DELEGATE"]


def delegated_nodes(model: Path | bytes, threads: int = 2) -> tuple[int, int, int]:
    """(XNNPACK partitions, delegated nodes, all nodes). After the first invoke the interpreter
    lists DELEGATE nodes after the original ones; a node is delegated when it lies between a
    delegate node's inputs and outputs. One partition holding every node is the fast case."""
    it = interpreter(model, threads)
    runner = it.get_signature_runner(SIGNATURE_KEY)
    detail = runner.get_input_details()[INPUT_NAME]
    runner(**{INPUT_NAME: np.zeros(detail["shape"], detail["dtype"])})
    ops = it._get_ops_details()
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o for o in original for t in o["outputs"]}
    inside: set[int] = set()
    for d in delegates:
        boundary, stack = {int(i) for i in d["inputs"]}, [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in boundary or t not in producer or producer[t]["index"] in inside:
                continue
            inside.add(producer[t]["index"])
            stack += [int(i) for i in producer[t]["inputs"] if i >= 0]
    return len(delegates), len(inside), len(original)
