"""Third-party noise hidden unless asked for (`-v`): start-up banners, foreign progress bars, warnings.

TensorFlow's C++ runtime logs (oneDNN, CUDA, CPU features) are written to file descriptor 2 while
the library loads, before anything in Python can configure it, and coremltools imports TensorFlow;
so those imports run with fd 2 pointed at a buffer. Converters' progress bars (coremltools'
passes, ai-edge-quantizer's calibration) and prints go to Python's sys.stdout/stderr during the
calls wrapped in :func:`hushed`. Our own log and progress bars are untouched.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

from common import interrupts

#: Loggers of the converters and runtimes: only their errors reach the user unless -v.
THIRD_PARTY_LOGGERS = ("coremltools", "tensorflow", "absl", "onnx2tf", "ai_edge_quantizer", "ai_edge_litert", "jax",
                       "onnxruntime", "h5py", "onnxsim", "onnxslim", "matplotlib", "PIL", "torchao", "executorch",
                       "torch.utils._pytree")
#: Libraries that print while they load (TensorFlow directly or through coremltools).
NOISY_IMPORTS = ("tensorflow", "coremltools")

_verbose = False


def configure(verbose: bool) -> None:
    """Call once, before anything imports a converter: environment variables read at import time,
    logger levels, warning filters."""
    global _verbose
    _verbose = verbose
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, UserWarning, FutureWarning, RuntimeWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(coremltools|torch|tensorflow|tf_keras|onnx2tf|"
                                                                       r"ai_edge_\w+|keras|onnxsim|google|torchao|"
                                                                       r"executorch)\b.*")
    # torch.export's pytree, deep-copied by ExecuTorch's passes: the warning is attributed to copyreg
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Point file descriptor 2 at a temporary file for the block (what C++ code writes before Python can
    configure it); the captured text is replayed if the block raises an error."""
    if _verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except Exception:  # an import that failed says why; Ctrl-C (KeyboardInterrupt) replays nothing
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_quietly(*modules: str) -> None:
    """Import (once) the libraries that print while loading, with their native output hidden and Ctrl-C
    held until they have loaded (common/interrupts.py)."""
    with interrupts.held(), native_stderr_hidden(), hushed():
        for name in modules or NOISY_IMPORTS:
            try:
                importlib.import_module(name)
            except ImportError:  # the caller that needs it says which one is missing
                pass


@contextlib.contextmanager
def hushed() -> Iterator[io.StringIO]:
    """Python-level output of a third-party call (progress bars, prints, and warnings it logs on the root
    logger, as onnxruntime.quantization does) captured unless -v. Our own loggers keep their levels."""
    captured = io.StringIO()
    if _verbose:
        yield captured
        return
    root = logging.getLogger()
    # the root, and third-party loggers that set their own level (ExecuTorch's Core ML partitioner: INFO)
    loggers = [root, *(logger for name, logger in logging.root.manager.loggerDict.items()
                       if isinstance(logger, logging.Logger) and name.split(".")[0] in THIRD_PARTY_LOGGERS
                       and logging.NOTSET < logger.level < logging.ERROR)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield captured
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
