"""An independent evaluator for saved Core ML models, for platforms where Core ML cannot predict.

Core ML predicts only on macOS, so on Linux the exported .mlmodel / .mlpackage would ship
unverified. This package reads the saved file back through coremltools' own spec and blob readers
(not the in-memory converter state) and executes its graph op by op with PyTorch.

Precision: every tensor is stored in the dtype the model declares for it. An fp16 ML Program is
therefore run with fp16 weights and fp16 activations between ops, which is the fp16 error a device
shows; inside one op the arithmetic is fp32 (as Core ML's fp16 CPU/GPU paths accumulate wider).
A device that accumulates in fp16 can differ somewhat more than this evaluator shows.

Compressed weights (ML Program constexpr_affine_dequantize / constexpr_lut_to_dense, iOS 16 form)
are decompressed to fp16 constants while the model is read, as Core ML does when it loads the
model. An op without a kernel here raises UnsupportedOpError while the model is read, never a guess.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from runtimes.coreml_reference.graph import Graph, UnsupportedOpError
from runtimes.coreml_reference.mil import CONSTEXPR_OPS, MIL_OPS, program_precision, read_ml_program
from runtimes.coreml_reference.neuralnetwork import NN_LAYERS, read_neural_network

log = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_CONSTEXPR_OPS",
    "SUPPORTED_MIL_OPS",
    "SUPPORTED_NN_LAYERS",
    "Graph",
    "UnsupportedOpError",
    "declared_precision",
    "evaluate_coreml",
    "load_coreml",
    "run_graph",
]

SUPPORTED_MIL_OPS = ("const", *sorted(MIL_OPS))
#: Compile-time ops holding compressed weights (iOS 16 form), decompressed to constants when read.
SUPPORTED_CONSTEXPR_OPS = tuple(sorted(CONSTEXPR_OPS))
SUPPORTED_NN_LAYERS = tuple(sorted(NN_LAYERS))


def _load_spec(path: Path):
    import coremltools as ct

    if not Path(path).exists():
        raise FileNotFoundError(f"Core ML model {path} does not exist")
    return ct.utils.load_spec(str(path))


def load_coreml(path: Path) -> Graph:
    """Read a saved .mlmodel (NeuralNetwork) or .mlpackage (ML Program) into a runnable Graph."""
    from coremltools.libmodelpackage import ModelPackage

    path = Path(path)
    spec = _load_spec(path)
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        if not path.is_dir():
            raise UnsupportedOpError("mlProgram", str(path), "an ML Program needs its .mlpackage for the weights")
        # Blob paths are "@model_path/weights/...", relative to the folder holding the root spec.
        model_dir = Path(ModelPackage(str(path)).getRootModel().path()).parent
        graph = read_ml_program(spec, model_dir)
    else:
        graph = read_neural_network(spec)
    log.debug("read %s: %s, %d ops (%s), evaluated in %s%s", path.name, graph.format, len(graph.nodes),
             ", ".join(graph.op_types), graph.precision,
             f"; decompressed {graph.decompressed}" if graph.decompressed else "")
    return graph


def to_pixels(rgb01: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> the 8-bit pixel values a picture holds (as float32)."""
    return np.clip(np.round(rgb01.astype(np.float64) * 255.0), 0, 255).astype(np.float32)


def declared_precision(path: Path) -> str:
    """The precision the model declares and evaluate_coreml computes in: "fp16" for an ML Program whose
    ops produce fp16 tensors, else "fp32" (a NeuralNetwork declares none and runs in fp32 on the CPU)."""
    spec = _load_spec(Path(path))
    return program_precision(spec) if spec.WhichOneof("Type") == "mlProgram" else "fp32"


def evaluate_coreml(path: Path, inputs_nchw: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Run the saved model on each (3, H, W) row of inputs_nchw, one image at a time; joints (N, J, 3) float32.

    threads: torch intra-op threads for the run (restored afterwards); None keeps torch's setting.
    1 by default: one image of XS takes ~0.05 s on one thread, while torch's 2-thread pool was
    measured 30x slower when another process held the second core.
    """
    graph = load_coreml(path)
    start = time.perf_counter()
    outputs = [run_graph(graph, x[None], threads) for x in inputs_nchw]
    log.debug("evaluated %s on %d inputs in %.2f s (%s)", Path(path).name, len(inputs_nchw),
             time.perf_counter() - start, graph.precision)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def run_graph(graph: Graph, x: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """One input through ``graph`` with ``threads`` torch threads (restored afterwards). ``x`` is the
    NCHW float tensor of the app contract; an image-input model gets it as the picture an app would
    hand over (RGB pixel values, x * 255 rounded)."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if graph.image_input is not None:
            return graph.run_image(to_pixels(x))
        return graph.run(x.astype(np.float32, copy=False))
    finally:
        torch.set_num_threads(previous_threads)
