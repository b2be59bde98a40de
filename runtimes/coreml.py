"""Core ML: MLModel.predict on macOS; elsewhere the independent reference evaluator, labelled as such.

The one place a Core ML model (or its reference evaluation) is run. The evaluator's figures are
parity only: its speed and memory say nothing about a phone, so its sessions are not timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from runtimes.session import Session, Tensors, to_layout

REFERENCE_EVALUATOR = "reference evaluator (saved spec read back and run op by op in PyTorch; not Core ML)"
#: The same evaluator in its fp16-accumulation mode (coreml_reference.fp16_accumulation).
FP16_ACCUMULATION = "reference evaluator, every sum accumulated in fp16 (a worst-case GPU / Neural Engine; not Core ML)"
#: Torch threads of the reference evaluator (see coreml_reference.evaluate_coreml).
EVALUATOR_THREADS = 1


def intermediate_tensors(path: Path, x: np.ndarray, threads: int = 2, layout: str = "NCHW",
                         accumulation: str = "op") -> Tensors:
    """Every tensor of the saved model for ``x`` (1, 3, S, S) NCHW in [0, 1], from the reference evaluator
    (Core ML itself does not expose them), in execution order; ``accumulation`` as for open_session."""
    from runtimes.coreml_reference import load_coreml, to_pixels

    graph = load_coreml(path)
    keep: dict[str, np.ndarray] = {}
    if graph.image_input is not None:
        graph.run_image(to_pixels(x), keep, accumulation)
    else:
        graph.run(x.astype(np.float32), keep, accumulation)
    return list(keep.items())


def can_predict() -> tuple[bool, str]:
    if sys.platform != "darwin":
        return False, f"not measured on this OS: Core ML prediction is only supported on macOS (this is {sys.platform})"
    return True, ""


def open_session(path: Path, threads: int = 2, layout: str = "NCHW", accumulation: str = "op") -> Session:
    """``layout`` "image": the model takes a picture; it still receives the NCHW RGB [0, 1] tensor of the
    contract here and is fed that picture's pixels. ``accumulation`` "fp16": the reference evaluator in its
    fp16-accumulation mode, on any OS (Core ML itself cannot be told how to sum); an fp16 program only."""
    layout = "NCHW" if layout == "image" else layout
    can, reason = can_predict()
    if accumulation != "op":
        from runtimes.coreml_reference import load_coreml, run_graph

        graph = load_coreml(path)
        graph.check_accumulation(accumulation)
        return Session(lambda x: run_graph(graph, to_layout(x, layout), EVALUATOR_THREADS, accumulation),
                       FP16_ACCUMULATION, timed=False, note=f"parity by the {FP16_ACCUMULATION}")
    if can:
        import coremltools as ct
        from PIL import Image

        from runtimes.coreml_reference import to_pixels

        model = ct.models.MLModel(str(path))
        description = model.get_spec().description
        # the contract's names in our files; a .pte's Core ML payload keeps torch.export's ("x", ...)
        name_in, name_out = description.input[0].name, description.output[0].name
        if description.input[0].type.WhichOneof("Type") == "imageType":  # a picture goes in
            def predict(x):
                rgb = to_pixels(x)[0].transpose(1, 2, 0).astype("uint8")
                return model.predict({name_in: Image.fromarray(rgb, "RGB")})[name_out]
        else:
            def predict(x):
                return model.predict({name_in: to_layout(x, layout)})[name_out]
        return Session(predict, f"Core ML (coremltools {ct.__version__})")
    from runtimes.coreml_reference import load_coreml, run_graph

    graph = load_coreml(path)
    return Session(lambda x: run_graph(graph, to_layout(x, layout), EVALUATOR_THREADS), REFERENCE_EVALUATOR,
                   timed=False, note=f"latency {reason}; parity by the {REFERENCE_EVALUATOR}")


def fp16_accumulation_check(path: Path, inputs_nchw: np.ndarray, threads: int = EVALUATOR_THREADS) -> np.ndarray | None:
    """Joints (N, J, 3) of the saved model on ``inputs_nchw`` (NCHW RGB [0, 1], the contract's tensor) with
    every sum accumulated in fp16 one term at a time -- the worst a phone's GPU or Neural Engine can do --
    for the export and ``verify`` to judge against the file's budget; None when the file does not compute in
    fp16 (a NeuralNetwork .mlmodel, an fp32 ML Program): the mode does not apply to it."""
    from runtimes.coreml_reference import declared_precision, evaluate_coreml

    if declared_precision(path) != "fp16":
        return None
    return evaluate_coreml(path, inputs_nchw, threads, accumulation="fp16")
