"""An independent evaluator for saved Core ML models, for platforms where Core ML cannot predict.

Core ML predicts only on macOS, so on Linux the exported .mlmodel / .mlpackage would ship
unverified. This package reads the saved file back through coremltools' own spec and blob readers
(not the in-memory converter state) and executes its graph op by op with PyTorch.

Precision: every tensor is stored in the dtype the model declares for it. An fp16 ML Program is
therefore run with fp16 weights and fp16 activations between ops, which is the fp16 error a device
shows; inside one op the arithmetic is fp32 (as Core ML's fp16 CPU/GPU paths accumulate wider).
A device that accumulates in fp16 can differ somewhat more than this evaluator shows.

An op without a kernel here raises UnsupportedOpError while the model is read, never a guess.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from exporters.coreml_reference.graph import Graph, UnsupportedOpError
from exporters.coreml_reference.mil import MIL_OPS, read_ml_program
from exporters.coreml_reference.neuralnetwork import NN_LAYERS, read_neural_network

log = logging.getLogger(__name__)

__all__ = [
    "Graph",
    "UnsupportedOpError",
    "SUPPORTED_MIL_OPS",
    "SUPPORTED_NN_LAYERS",
    "declared_precision",
    "evaluate_coreml",
    "load_coreml",
]

SUPPORTED_MIL_OPS = ("const", *sorted(MIL_OPS))
SUPPORTED_NN_LAYERS = tuple(sorted(NN_LAYERS))


def load_coreml(path: Path) -> Graph:
    """Read a saved .mlmodel (NeuralNetwork) or .mlpackage (ML Program) into a runnable Graph."""
    import coremltools as ct
    from coremltools.libmodelpackage import ModelPackage

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Core ML model {path} does not exist")
    spec = ct.utils.load_spec(str(path))
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        if not path.is_dir():
            raise UnsupportedOpError("mlProgram", str(path), "an ML Program needs its .mlpackage for the weights")
        # Blob paths are "@model_path/weights/...", relative to the folder holding the root spec.
        model_dir = Path(ModelPackage(str(path)).getRootModel().path()).parent
        graph = read_ml_program(spec, model_dir)
    else:
        graph = read_neural_network(spec)
    log.info("read %s: %s, %d ops (%s), evaluated in %s", path.name, graph.format, len(graph.nodes),
             ", ".join(graph.op_types), graph.precision)
    return graph


def declared_precision(path: Path) -> str:
    """"fp16" when the model computes on fp16 tensors (an fp16 ML Program), else "fp32"."""
    return load_coreml(path).precision


def evaluate_coreml(path: Path, inputs_nchw: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run the saved model on each (3, H, W) row of inputs_nchw, one image at a time; joints (N, J, 3) float32.

    threads: torch intra-op threads for the run (restored afterwards); None keeps torch's setting.
    On a shared machine 1 thread is steadier than 2: torch's spinning thread pool stalls when
    another process holds the second core.
    """
    graph = load_coreml(path)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        outputs = [graph.run(x[None].astype(np.float32, copy=False)) for x in inputs_nchw]
    finally:
        torch.set_num_threads(previous_threads)
    log.info("evaluated %s on %d inputs in %.2f s (%s)", Path(path).name, len(inputs_nchw),
             time.perf_counter() - start, graph.precision)
    return np.concatenate(outputs).astype(np.float32, copy=False)
