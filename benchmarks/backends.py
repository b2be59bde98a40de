"""Backends a benchmark can run: the PyTorch reference plus one per artifact in the manifest.

`open_backend` returns a predict function taking one NCHW float32 image (1, 3, S, S) -- the
artifact's own layout is applied inside, outside nothing else changes -- and a label naming
the runtime that really ran.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from exporters.contract import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Backend:
    name: str  # unique row name, e.g. "tflite-fp16"
    format: str  # manifest format, or "pytorch"
    precision: str
    artifact: str | None  # file in the output folder; None for PyTorch
    layout: str  # NCHW or NHWC
    bytes: int = 0


PYTORCH = Backend("pytorch", "pytorch", "fp32", None, "NCHW")
_ROW_NAMES = {"onnx": "onnxruntime", "onnx-simplified": "onnxruntime-simplified"}


def backends_from_manifest(manifest: dict) -> list[Backend]:
    rows = [PYTORCH]
    for art in manifest["artifacts"]:
        fmt = art["format"]
        plain = fmt != "tflite" and not (fmt == "coreml-mlpackage" and art["precision"] != "fp16")
        name = _ROW_NAMES.get(fmt, fmt if plain else f"{fmt}-{art['precision']}")
        rows.append(Backend(name, fmt, art["precision"], art["file"], art["layout"], art["bytes"]))
    return rows


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _tflite_interpreter_class() -> tuple[type, str]:
    """ai-edge-litert, else tflite-runtime, else TensorFlow's own interpreter; says which."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {_version('ai-edge-litert')} (XNNPACK)"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, f"tflite-runtime {_version('tflite-runtime')} (XNNPACK)"
    except (ImportError, AttributeError):  # AttributeError: tflite-runtime beside numpy 2
        pass
    import tensorflow as tf

    return tf.lite.Interpreter, f"tensorflow {tf.__version__} tf.lite.Interpreter"


@dataclass(frozen=True)
class OpenedBackend:
    predict: Predict
    runtime: str  # what really runs, e.g. "ai-edge-litert 2.3.0 (XNNPACK)"
    timed: bool = True  # False: its latency says nothing about the target (reference evaluator)
    note: str = ""


def open_backend(backend: Backend, out_dir: Path, threads: int, manifest: dict) -> OpenedBackend:
    if backend.format == "pytorch":
        return _open_pytorch(manifest, threads)
    path = out_dir / backend.artifact
    if backend.format in ("onnx", "onnx-simplified"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return OpenedBackend(lambda x: session.run(None, {INPUT_NAME: x})[0], f"onnxruntime {_version('onnxruntime')} CPU")
    if backend.format == "tflite":
        interpreter_class, label = _tflite_interpreter_class()
        interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        runner = interpreter.get_signature_runner("serving_default")

        def predict(x: np.ndarray) -> np.ndarray:
            return runner(**{INPUT_NAME: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[OUTPUT_NAME]

        return OpenedBackend(predict, label)
    if backend.format.startswith("coreml"):
        from exporters.runtimes import REFERENCE_EVALUATOR, coreml_can_predict

        can, reason = coreml_can_predict()
        if can:
            import coremltools as ct

            model = ct.models.MLModel(str(path))
            return OpenedBackend(lambda x: model.predict({INPUT_NAME: x})[OUTPUT_NAME],
                                 f"Core ML (coremltools {ct.__version__})")
        from exporters.coreml_reference import load_coreml

        graph = load_coreml(path)
        return OpenedBackend(graph.run, REFERENCE_EVALUATOR, timed=False,
                             note=f"latency {reason}; parity by the {REFERENCE_EVALUATOR}")
    raise ValueError(f"no runner for format {backend.format!r}")


def _open_pytorch(manifest: dict, threads: int) -> OpenedBackend:
    """Eager PyTorch on the same input contract as the artifacts (normalisation folded or not)."""
    import torch

    from benchmarks.run import load_manifest_checkpoint
    from exporters.contract import fold_normalization

    torch.set_num_threads(threads)
    loaded = load_manifest_checkpoint(manifest)
    model = loaded.build_model()
    if manifest["input"]["normalization_folded"]:
        model = fold_normalization(model)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return OpenedBackend(predict, f"torch {torch.__version__} eager")
