"""ONNX Runtime, CPU execution provider: the one place an InferenceSession is opened."""

from __future__ import annotations

from pathlib import Path

from common.errors import RuntimeUnavailableError
from runtimes.session import INPUT_NAME, Session, to_layout
from runtimes.versions import version_of


def inference_session(path: Path, threads: int = 2):
    """An onnxruntime.InferenceSession on the CPU with ``threads`` intra-op threads and no inter-op pool."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeUnavailableError("onnxruntime is not installed (pip install -e . installs it)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    session = inference_session(path, threads)
    return Session(lambda x: session.run(None, {INPUT_NAME: to_layout(x, layout)})[0],
                   f"onnxruntime {version_of('onnxruntime')} CPU")
