"""ONNX Runtime, CPU execution provider: the one place an InferenceSession is opened."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from common.errors import RuntimeUnavailableError
from models.contract import INPUT_NAME
from runtimes.session import Session, Tensors, to_layout
from runtimes.versions import version_of


def inference_session(path: Path | bytes, threads: int = 2):
    """An onnxruntime.InferenceSession on the CPU with ``threads`` intra-op threads and no inter-op pool;
    ``path`` may also be a serialised model (the roofline's one-op graphs)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailableError("onnxruntime is not installed (pip install -e . installs it)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not isinstance(path, bytes) and Path(path).suffix == ".ort":
        # a Runtime-style .ort (exporters/converters/to_ort.py) holds optimisations to replay: as the app runs it
        options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def intermediate_tensors(path: Path, x: np.ndarray, threads: int = 2, layout: str = "NCHW") -> Tensors:
    """Every float tensor the graph computes for ``x`` (1, 3, S, S) NCHW, in node order: the model with all
    of them made graph outputs. A .ort file cannot be edited so: its output boundary only."""
    if Path(path).suffix == ".ort":
        return [("joints", open_session(path, threads, layout).predict(x).astype(np.float32))]
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    known = {o.name for o in model.graph.output}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    order = [out for node in model.graph.node for out in node.output]
    infos = {v.name: v for v in model.graph.value_info if v.type.tensor_type.elem_type in float_types}
    model.graph.output.extend(infos[name] for name in order if name in infos and name not in known)
    with tempfile.TemporaryDirectory(prefix="ort-tensors-") as tmp:
        probe = Path(tmp) / "all-outputs.onnx"
        onnx.save(model, str(probe))
        session = inference_session(probe, threads)
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {INPUT_NAME: to_layout(x, layout)})
    by_name = dict(zip(names, values))
    return [(name, by_name[name].astype(np.float32)) for name in order if name in by_name]


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    session = inference_session(path, threads)
    return Session(lambda x: session.run(None, {INPUT_NAME: to_layout(x, layout)})[0],
                   f"onnxruntime {version_of('onnxruntime')} CPU")
