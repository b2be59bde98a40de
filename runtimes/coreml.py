"""Core ML: MLModel.predict on macOS; elsewhere the independent reference evaluator, labelled as such.

The one place a Core ML model (or its reference evaluation) is run. The evaluator's figures are
parity only: its speed and memory say nothing about a phone, so its sessions are not timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtimes.session import INPUT_NAME, OUTPUT_NAME, Session, to_layout

REFERENCE_EVALUATOR = "reference evaluator (saved spec read back and run op by op in PyTorch; not Core ML)"
#: Torch threads of the reference evaluator (see coreml_reference.evaluate_coreml).
EVALUATOR_THREADS = 1


def can_predict() -> tuple[bool, str]:
    if sys.platform != "darwin":
        return False, f"not measured on this OS: Core ML prediction is only supported on macOS (this is {sys.platform})"
    return True, ""


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    can, reason = can_predict()
    if can:
        import coremltools as ct

        model = ct.models.MLModel(str(path))
        return Session(lambda x: model.predict({INPUT_NAME: to_layout(x, layout)})[OUTPUT_NAME],
                       f"Core ML (coremltools {ct.__version__})")
    from runtimes.coreml_reference import load_coreml, run_graph

    graph = load_coreml(path)
    return Session(lambda x: run_graph(graph, to_layout(x, layout), EVALUATOR_THREADS), REFERENCE_EVALUATOR,
                   timed=False, note=f"latency {reason}; parity by the {REFERENCE_EVALUATOR}")
