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
#: Torch threads of the reference evaluator (see coreml_reference.evaluate_coreml).
EVALUATOR_THREADS = 1


def intermediate_tensors(path: Path, x: np.ndarray, threads: int = 2, layout: str = "NCHW") -> Tensors:
    """Every tensor of the saved model for ``x`` (1, 3, S, S) NCHW in [0, 1], from the reference evaluator
    (Core ML itself does not expose them), in execution order."""
    from runtimes.coreml_reference import load_coreml, to_pixels

    graph = load_coreml(path)
    keep: dict[str, np.ndarray] = {}
    if graph.image_input is not None:
        graph.run_image(to_pixels(x), keep)
    else:
        graph.run(x.astype(np.float32), keep)
    return list(keep.items())


def can_predict() -> tuple[bool, str]:
    if sys.platform != "darwin":
        return False, f"not measured on this OS: Core ML prediction is only supported on macOS (this is {sys.platform})"
    return True, ""


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    """``layout`` "image": the model takes a picture; it still receives the NCHW RGB [0, 1] tensor of the
    contract here and is fed that picture's pixels."""
    layout = "NCHW" if layout == "image" else layout
    can, reason = can_predict()
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
