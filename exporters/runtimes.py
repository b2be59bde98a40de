"""Run an artifact on a batch of NCHW inputs with its own runtime; returns joints (N, J, 3).

Each runner feeds one image at a time in the artifact's own layout, as an app would.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from exporters.contract import INPUT_NAME


def run_onnx(path: Path, inputs_nchw: np.ndarray, threads: int = 2) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: x[None]})[0] for x in inputs_nchw])


def tflite_interpreter(path: Path, threads: int = 2):
    """ai-edge-litert's Interpreter (XNNPACK on by default)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=threads)


def run_tflite(path: Path, inputs_nchw: np.ndarray, threads: int = 2) -> np.ndarray:
    """Through the `serving_default` signature: NHWC input `image`, output `joints`."""
    runner = tflite_interpreter(path, threads).get_signature_runner("serving_default")
    outs = [runner(**{INPUT_NAME: x.transpose(1, 2, 0)[None].copy()}) for x in inputs_nchw]
    return np.concatenate([o["joints"] for o in outs])


REFERENCE_EVALUATOR = "reference evaluator (saved spec read back and run op by op in PyTorch; not Core ML)"


def coreml_runner() -> tuple[Callable[[Path, np.ndarray], np.ndarray], str]:
    """Core ML itself on macOS; elsewhere the independent reference evaluator, labelled as such."""
    if coreml_can_predict()[0]:
        return run_coreml, "Core ML runtime (MLModel.predict)"
    from exporters.coreml_reference import evaluate_coreml

    return evaluate_coreml, REFERENCE_EVALUATOR


def coreml_can_predict() -> tuple[bool, str]:
    if sys.platform != "darwin":
        return False, f"not measured on this OS: Core ML prediction is only supported on macOS (this is {sys.platform})"
    return True, ""


def run_coreml(path: Path, inputs_nchw: np.ndarray) -> np.ndarray:
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    return np.concatenate([model.predict({INPUT_NAME: x[None]})["joints"] for x in inputs_nchw])
