"""Run an exported artifact: one runner per runtime, the only place a runtime is opened.

The export gate, the parity suite (``judging.verify``), the bench worker and the profiler all
open artifacts through :func:`open_session`, so the file that was verified is the file that is
timed, in the same runtime with the same options. A runtime that is missing is an error naming
it (:class:`common.errors.RuntimeUnavailableError`), never a silent switch to another one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes import coreml, executorch_coreml, executorch_runtime, litert, onnxrt
from runtimes.session import Session

__all__ = ["ACCELERATORS", "INPUT_NAME", "OUTPUT_NAME", "RUNTIMES", "RUNTIME_PACKAGES", "Session", "open_session",
           "run_artifact"]

#: Runtime key (what an artifact kind names, and the manifest records) -> opener(path, threads, layout).
RUNTIMES: dict[str, Callable[[Path, int, str], Session]] = {
    "onnxruntime": onnxrt.open_session,
    "litert": litert.open_session,
    "coreml": coreml.open_session,
    "executorch": executorch_runtime.open_session,
    "executorch-coreml": executorch_coreml.open_session,  # its Core ML payload, where Core ML runs
}


#: Runtime key -> intermediate_tensors(path, x, threads, layout): every tensor it computes (diagnosis).
INTERMEDIATES = {"onnxruntime": onnxrt.intermediate_tensors, "litert": litert.intermediate_tensors,
                 "coreml": coreml.intermediate_tensors, "executorch": executorch_runtime.intermediate_tensors,
                 "executorch-coreml": executorch_coreml.intermediate_tensors}

#: The package whose version decides what a runtime computes (recorded in the manifest at export).
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "coreml": "coremltools",
                    "executorch": "executorch", "executorch-coreml": "coremltools"}


#: Accelerators a runtime's file can be opened on instead of a CPU: name -> (runtime, GPU precision).
#: "gpu": LiteRT's GPU accelerator with its default options (fp16 arithmetic, what a phone's GPU computes);
#: "gpu-fp32": the same with enforce_f32. Here on a software Vulkan device (runtimes/gpu, `make gpu`).
ACCELERATORS = {"gpu": ("litert", "fp16"), "gpu-fp32": ("litert", "fp32")}


def open_session(runtime: str, path: Path, threads: int = 2, layout: str = "NCHW", cpu: str | None = None,
                 accelerator: str | None = None) -> Session:
    """``cpu``: an emulated arm64 CPU model (runtimes/arm64/target.py, e.g. "cortex-a76") instead of this
    machine's; it runs one thread, as the instruction counts and phone figures assume. ``accelerator``: one of
    ACCELERATORS instead of a CPU (a process per batch, not timed; ``threads`` does not apply)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if accelerator is not None:
        if accelerator not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {accelerator!r}; known: {', '.join(ACCELERATORS)}")
        accelerated, precision = ACCELERATORS[accelerator]
        if runtime != accelerated or cpu is not None:
            raise ValueError(f"accelerator {accelerator!r} runs {accelerated} files on this machine, not {runtime} "
                             f"files{' on an emulated CPU' if cpu else ''}")
        from runtimes.gpu import runner as gpu_runner

        return gpu_runner.open_session(Path(path), layout, precision)
    if cpu is not None:
        from runtimes.arm64 import runner, target

        return runner.open_session(runtime, Path(path), layout, target.cpu_model(cpu))
    return RUNTIMES[runtime](Path(path), threads, layout)


def run_artifact(runtime: str, path: Path, inputs_nchw: np.ndarray, threads: int = 2,
                 layout: str = "NCHW") -> np.ndarray:
    """Open ``path`` in ``runtime`` and return its joints on every input."""
    return open_session(runtime, path, threads, layout).run_all(inputs_nchw)
