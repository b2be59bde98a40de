"""Run a .tflite on LiteRT's GPU accelerator: the worker (runtimes/gpu/worker.py) in a process of its own
with the software Vulkan device in its environment, inputs and outputs crossing by .npy files.

A process per file, for two reasons. The device must be in the environment before the process starts
(``LD_LIBRARY_PATH`` is read once, by the dynamic loader), and the caller's must stay as it is. And a
file that crashes the accelerator, Dawn or the Vulkan driver, or hangs it, costs that file only (ML
Drift's TopK over a channel count that is not a multiple of 4 kills its process with SIGFPE):
:class:`GpuRunFailed` names the file, the precision and why (a signal, LiteRT's own error line, a
time-out), and the jobs after it still run. Jobs run one at a time: lavapipe already spreads one
inference over every core.

Two precisions, LiteRT's two GPU options: ``"fp16"`` (the default options: what a phone's GPU computes,
half-precision arithmetic) and ``"fp32"`` (``enforce_f32``). Outputs are the file's own (our files:
joints (N, J, 3) float32), with whether the accelerator took every op (``is_fully_accelerated()``); a
file that is not fully accelerated ran partly on LiteRT's CPU path, which is not what is being judged.
Latency is not measured: lavapipe's timings say nothing about a phone's GPU (sessions are
``timed=False``).

Measured (2-core Xeon shared with other jobs, load ~5; ai-edge-litert 2.3.0, Mesa 25.0.7 lavapipe): the
shipped XS reference weights exported with ``--formats onnx,tflite``, the 4 golden inputs, one process per
file and option; the largest joint (x, y) distance from the x86 CPU's golden joints, in input px (heatmap
px x 8), and the seconds for the whole process (start, shader compilation ~1 s, 4 inferences):

    file                          fp16 (default options)     fp32 (enforce_f32)    every op on the GPU
    convnextpose-XS_fp32.tflite   32.94 px (median 4.48)     0.00052 px            yes, both
    convnextpose-XS_fp16.tflite   32.94 px (median 4.49)     0.00048 px            yes, both
    seconds per file and option   4-7 s (once 37 s while the machine was busier)

The distances repeat to the fifth digit from run to run. The fp16 figure is today's soft-argmax (a softmax
over 32,768 voxels and one 32,768-long sum, which fp16 accumulation does not survive; being reworked in
models/network.py), not the accelerator: with enforce_f32 the same kernels land within 0.0005 px.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConvNeXtPoseError
from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes.gpu import target
from runtimes.gpu.target import TargetRecord
from runtimes.litert import SIGNATURE_KEY
from runtimes.session import Session

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("worker.py")
#: precision -> LiteRT's GpuOptions.enforce_f32
PRECISIONS = {"fp16": False, "fp32": True}
#: A job is killed after this long (seconds) unless the caller says otherwise: XS on 4 inputs takes 4-7 s,
#: ~1.2 s per input after ~1 s of start-up; the larger variants and the 20-input verification set take minutes.
DEFAULT_TIMEOUT_S = 900.0


class GpuRunFailed(ConvNeXtPoseError):
    """One .tflite could not be run on the GPU accelerator (worker died, timed out, runtime error,
    or -- in a session that requires it -- not every op on the GPU)."""


@dataclass(frozen=True)
class GpuJob:
    """One .tflite on the GPU accelerator. ``layout``: the file's input layout (NHWC for our .tflite);
    inputs are given NCHW and transposed inside."""

    artifact: Path
    layout: str = "NHWC"
    precision: str = "fp16"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown GPU precision {self.precision!r}; known: {', '.join(PRECISIONS)}")

    @property
    def name(self) -> str:
        return f"{self.artifact.name} on the GPU accelerator ({self.precision})"


@dataclass(frozen=True)
class GpuRun:
    job: GpuJob
    outputs: np.ndarray  # the output for every input, stacked: (N, J, 3) float32 for our files
    fully_accelerated: bool  # the accelerator took every op (is_fully_accelerated())
    seconds: float  # the whole process: start, compile, every input
    runtime: str  # "ai-edge-litert 2.3.0 GPU accelerator (ML Drift/WebGPU, fp16) on Mesa 25.0.7 lavapipe ..."


def runtime_label(precision: str, record: TargetRecord) -> str:
    return (f"{target.ACCELERATOR_PACKAGE} {record.packages.get(target.ACCELERATOR_PACKAGE, '?')} GPU accelerator "
            f"(ML Drift/WebGPU, {precision}) on Mesa {record.mesa_release} lavapipe (software Vulkan)")


def _died(code: int) -> str:
    if code < 0:
        try:
            return f"the worker died of {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker died of signal {-code}"
    return f"the worker exited with code {code}"


#: LiteRT's and ML Drift's own log lines: "ERROR: [model_load.cc:59] Operator code index out of range".
_NATIVE_ERROR = re.compile(r"^(?:ERROR: \[[^\]]*\]|E\d{4} [^\]]*\])\s*(\S.*)$")


def _why(stdout: str, stderr: str) -> str:
    """What stopped the worker: its own error line (the exception LiteRT raised) and the first of the runtime's
    ERROR log lines that says something (the exception's text is often only a source location), else the last
    line it wrote."""
    said = [json.loads(line)["error"] for line in stdout.splitlines() if line.startswith('{"error"')]
    causes = [m.group(1).strip() for m in map(_NATIVE_ERROR.match, stderr.splitlines()) if m]
    parts = [re.sub(r"ERROR: \[[^\]]*\]\s*", "", said[-1].splitlines()[0]).rstrip(": ")] if said else []
    parts += causes[:1]
    if not parts:
        lines = [line.strip() for line in stderr.splitlines()
                 if line.strip() and not line.startswith(("INFO: ", "WARNING: "))]
        parts = lines[-1:] or ["no message"]
    return "; ".join(parts)[:400]


def _run(job: GpuJob, inputs_npy: Path, workdir: Path, timeout_s: float, record: TargetRecord) -> GpuRun:
    if not job.artifact.is_file():
        raise GpuRunFailed(f"{job.name}: no such file ({job.artifact})")
    folder = Path(tempfile.mkdtemp(prefix=f"{job.artifact.stem}-{job.precision}-", dir=workdir))
    outputs = folder / "outputs.npy"
    request = {"artifact": str(job.artifact.resolve()), "layout": job.layout, "precision": job.precision,
               "signature": SIGNATURE_KEY, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
               "inputs": str(inputs_npy.resolve()), "outputs": str(outputs)}
    (folder / "request.json").write_text(json.dumps(request))
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-s", str(WORKER), str(folder / "request.json")], cwd=folder,
                              env=target.environment(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise GpuRunFailed(f"{job.name}: timed out after {timeout_s:g} s (worker killed)") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not outputs.is_file():
        raise GpuRunFailed(f"{job.name}: {_died(done.returncode)} ({_why(done.stdout, done.stderr)})")
    # the JSON line is the worker's last word on stdout (LiteRT prints there too, before it)
    report = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))
    return GpuRun(job, np.load(outputs), bool(report["fully_accelerated"]), seconds,
                  runtime_label(job.precision, record))


def run_jobs(jobs: Sequence[GpuJob], inputs_nchw: np.ndarray, timeout_s: float = DEFAULT_TIMEOUT_S,
             record: TargetRecord | None = None) -> list[GpuRun | GpuRunFailed]:
    """Every job on the same inputs (N, 3, S, S) NCHW float32, one after the other; one result per job in
    the order given (a failure is returned, not raised: the others still run). ``record``: the target
    (default: the installed one, :func:`target.ensure_ready`; the set-up passes the one it is checking)."""
    record = record or target.ensure_ready()
    results: list[GpuRun | GpuRunFailed] = []
    with tempfile.TemporaryDirectory(prefix="gpu-") as tmp:
        inputs_npy = Path(tmp) / "inputs.npy"
        np.save(inputs_npy, np.ascontiguousarray(inputs_nchw, dtype=np.float32))
        for job in jobs:
            try:
                results.append(_run(job, inputs_npy, Path(tmp), timeout_s, record))
                log.debug("%s: %.1f s", job.name, results[-1].seconds)
            except GpuRunFailed as exc:
                results.append(exc)
    return results


def run_job(job: GpuJob, inputs_nchw: np.ndarray, timeout_s: float = DEFAULT_TIMEOUT_S,
            record: TargetRecord | None = None) -> GpuRun:
    """One job on the inputs (N, 3, S, S) NCHW float32; raises :class:`GpuRunFailed`."""
    (result,) = run_jobs([job], inputs_nchw, timeout_s, record)
    if isinstance(result, GpuRunFailed):
        raise result
    return result


def open_session(path: Path, layout: str = "NHWC", precision: str = "fp16", timeout_s: float = DEFAULT_TIMEOUT_S,
                 require_full_acceleration: bool = True) -> Session:
    """The common session interface over the GPU accelerator: ``run_all`` sends every input to one worker
    process (starting it and compiling the shaders cost seconds), ``predict`` one input. Not timed.
    ``require_full_acceleration``: a file the accelerator did not take whole fails (:class:`GpuRunFailed`)
    instead of returning what LiteRT's CPU path computed for part of it."""
    job = GpuJob(Path(path), layout, precision)

    def batch(inputs_nchw: np.ndarray) -> np.ndarray:
        result = run_job(job, inputs_nchw, timeout_s)
        if require_full_acceleration and not result.fully_accelerated:
            raise GpuRunFailed(f"{job.name}: the accelerator did not take every op (is_fully_accelerated() is "
                               f"false): part of the file ran on LiteRT's CPU path")
        return result.outputs

    label = runtime_label(precision, target.ensure_ready())
    return Session(batch, label, timed=False, note="software Vulkan (lavapipe): timings say nothing about a phone GPU",
                   batch=batch)
