"""Verdicts on the phone's GPU path: every .tflite run on LiteRT's GPU accelerator with its default options
(fp16 arithmetic: what a phone's GPU computes for any float file, fp32 ones included) on a software Vulkan
device (runtimes/gpu), judged against its precision budget, and its distance from this machine's joints
measured (what the golden delegate tolerances rest on).

Arithmetic: a float file (fp32 or fp16 weights) is computed in fp16 on the GPU, so it is held to the fp16
budget there; an integer file to its own budget. A file the accelerator does not take whole failed (part of it
ran on LiteRT's CPU path, which is not what a phone's GPU runs). Inputs: the judged images of the verification
set and the golden inputs, fed as the exact tensors an app's test feeds.

Measured (shipped XS reference weights, 4 golden inputs, Mesa 25.0.7 lavapipe): with the softmax + one
32,768-long matmul tail both float files were 32.9 input px from this machine's joints; with the per-axis
marginal tail (models/network.SoftArgmax3D) 0.27 px (fp32 file) and 0.29 px (fp16 file), every op on the GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from judging.cross_isa import cross_isa_distance
from judging.gates import Budgets, judge
from judging.manifest import Artifact
from judging.references import References
from runtimes.gpu.runner import DEFAULT_TIMEOUT_S, GpuJob, GpuRunFailed, run_jobs

log = logging.getLogger(__name__)

#: The accelerator's default options: fp16 arithmetic.
GPU_PRECISION = "fp16"
#: An artifact's arithmetic on this machine -> the arithmetic (budget family) it is judged in on the GPU.
GPU_ARITHMETIC = {"fp32": "fp16", "fp16-weights": "fp16", "fp16": "fp16", "int8": "int8"}
#: The key of a GPU record in an artifact's ``verified_on``.
ACCELERATOR = "gpu"


def gpu_candidates(artifacts: Sequence[Artifact]) -> list[Artifact]:
    """The artifacts LiteRT's GPU accelerator runs: every .tflite."""
    return [a for a in artifacts if a.runtime == "litert"]


@dataclass(frozen=True)
class GpuCheck:
    """One artifact on the GPU accelerator."""

    precision: str  # the accelerator's arithmetic ("fp16": default options)
    runtime: str  # what ran it (runtime, version, Vulkan device)
    inputs: int
    status: str  # "passed" | "failed"
    reason: str | None  # the gate's reason, or why the accelerator could not run it
    headline: str | None
    verdict: dict | None  # gates.Verdict.to_dict() in the GPU's arithmetic (None when it could not run)
    fully_accelerated: bool | None
    gpu_input_px: float | None  # max 2-D joint distance from this machine's joints on the same inputs
    seconds: float | None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def record(self) -> dict:
        """The manifest's ``verified_on`` entry."""
        return {**asdict(self), "accelerator": ACCELERATOR}


def verify_on_gpu(folder: Path, artifacts: Sequence[Artifact], fed: np.ndarray, refs: References,
                  judged: Callable[[Artifact], np.ndarray], here: dict[str, np.ndarray], budgets: Budgets,
                  units: np.ndarray | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, GpuCheck]:
    """Each .tflite of ``artifacts`` (files in ``folder``) on the GPU accelerator with default options.

    ``fed``: the inputs as the artifacts take them, NCHW; ``refs``: the PyTorch references on them;
    ``judged(art)``: rows its cost is taken over; ``here``: file -> its joints on this machine, same inputs;
    ``units``: each row's unit of evidence (InputSet.units)."""
    candidates = gpu_candidates(artifacts)
    jobs = [GpuJob(folder / a.file, a.layout, GPU_PRECISION) for a in candidates]
    results = run_jobs(jobs, fed, timeout_s)
    for i, result in enumerate(results):
        # once more: seen once on a machine at load 10, "TensorBufferWrapper error: code=7" from a file that ran
        # fine before and after (the software device, not the file); a failure that repeats is the file's
        if isinstance(result, GpuRunFailed) and "timed out" not in str(result):
            log.info("%s: %s; running it once more", jobs[i].name, result)
            results[i] = run_jobs([jobs[i]], fed, timeout_s)[0]
    checks = {a.file: _check(a, r, refs, judged(a), here[a.file], budgets, units)
              for a, r in zip(candidates, results)}
    for file, c in checks.items():
        log.info("%s on the GPU accelerator (%s): %s (%s; %s from this machine's joints)", file, c.precision,
                 c.status, c.reason or c.headline, "-" if c.gpu_input_px is None else f"{c.gpu_input_px:.2g} input px")
    return checks


def _check(art: Artifact, result, refs: References, judged: np.ndarray, here: np.ndarray, budgets: Budgets,
           units: np.ndarray | None) -> GpuCheck:
    n = len(here)
    if isinstance(result, GpuRunFailed):
        return GpuCheck(GPU_PRECISION, "LiteRT GPU accelerator", n, "failed", str(result), None, None, None, None,
                        None)
    seconds = round(result.seconds, 2)
    if not result.fully_accelerated:
        return GpuCheck(GPU_PRECISION, result.runtime, n, "failed", "not every op ran on the GPU accelerator "
                        "(is_fully_accelerated() is false)", None, None, False, None, seconds)
    joints = result.outputs
    verdict = judge(joints, GPU_ARITHMETIC[art.verdict["arithmetic"]], refs, judged, budgets, units)
    xy, _ = cross_isa_distance(joints, here, refs.spec)
    reason = None if verdict.published else f"{verdict.reason}: {verdict.describe()}"
    return GpuCheck(GPU_PRECISION, result.runtime, n, "passed" if verdict.published else "failed", reason,
                    verdict.headline(), verdict.to_dict(), True, xy, seconds)


def with_gpu_checks(art: Artifact, check: GpuCheck | None) -> Artifact:
    """``art`` with its GPU record replaced by ``check`` (the other records kept)."""
    if check is None:
        return art
    kept = [r for r in art.verified_on if r.get("accelerator") != ACCELERATOR]
    return replace(art, verified_on=(*kept, check.record()))


def gpu_input_px(art: Artifact) -> float | None:
    """The measured distance of ``art``'s joints on the GPU accelerator from this machine's, if it was run there."""
    return next((r.get("gpu_input_px") for r in art.verified_on if r.get("accelerator") == ACCELERATOR), None)
