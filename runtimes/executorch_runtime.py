"""ExecuTorch (.pte) through its Python runtime: the one place a .pte program is loaded.

The runtime's XNNPACK backend runs the delegated graph, as on a phone; its thread pool is sized with
the runtime's own control (``_unsafe_reset_threadpool``), since a program has no thread option.
Core ML-delegated programs cannot run here (the Linux runtime registers no Core ML backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import RuntimeUnavailableError
from common.quiet import native_stderr_hidden
from runtimes.session import Session, Tensors
from runtimes.versions import version_of

METHOD = "forward"


def _runtime(threads: int):
    try:
        with native_stderr_hidden():  # cpuinfo probing lines on x86
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
            from executorch.runtime import Runtime
    except ImportError:
        raise RuntimeUnavailableError("executorch is not installed: it is the runtime that verifies and times every "
                                      ".pte (pip install -e . installs it)") from None
    with native_stderr_hidden():  # "Resetting threadpool to N threads."
        _unsafe_reset_threadpool(threads)
    return Runtime.get()


def label() -> str:
    return f"executorch {version_of('executorch')} (XNNPACK)"


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    """``forward(image NCHW) -> joints``."""
    import torch

    runtime = _runtime(threads)
    with native_stderr_hidden():
        method = runtime.load_program(Path(path)).load_method(METHOD)

    def predict(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0].numpy()

    return Session(predict, label())


def intermediate_tensors(path: Path, x: np.ndarray, threads: int = 2, layout: str = "NCHW") -> Tensors:
    """The delegate keeps its intermediate tensors to itself: the output boundary only."""
    return [("joints", open_session(path, threads, layout).predict(x).astype(np.float32))]
