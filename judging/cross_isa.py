"""Verdicts on the phone's instruction set: every TFLite and ONNX artifact run on emulated arm64 CPUs
(runtimes/arm64), judged with the same two gates as on this machine, and its distance from this
machine's joints measured (the cross-ISA difference the golden CPU tolerances rest on).

Inputs: the golden inputs (exporters/app_files/golden.py picks them from the verification set), fed
as the exact tensors an app's test feeds. Each file is run once per CPU model, all of them side by
side on the host's cores; a file whose emulator dies or times out is failed with that reason, the
others are still judged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.machine import cpu_name, isa
from judging.gates import Budgets, judge
from judging.inputs import InputSet
from judging.judged_rows import judged_mask_for
from judging.manifest import Artifact, Manifest
from judging.parity import input_px_errors
from judging.references import References
from models.spec import BBOX_3D_DEPTH_MM
from runtimes.arm64 import target
from runtimes.arm64.runner import ARM64_RUNTIMES, DEFAULT_TIMEOUT_S, EmulatedJob, EmulationFailed, run_jobs
from runtimes.arm64.target import CpuModel

log = logging.getLogger(__name__)

#: What ``--arch`` / ``--verify-arch`` accept besides this machine's own.
ARCHES = ("arm64",)


def arm64_candidates(artifacts: Sequence[Artifact]) -> list[Artifact]:
    """The artifacts an arm64 runtime runs: every .tflite, .onnx and .ort (Core ML is Apple's, not an arm64 CPU's)."""
    return [a for a in artifacts if a.runtime in ARM64_RUNTIMES]


@dataclass(frozen=True)
class CpuCheck:
    """One artifact on one emulated CPU model."""

    cpu: str  # qemu model, e.g. cortex-a76
    cpu_label: str
    runtime: str  # what ran it (runtime, version, emulator)
    inputs: int
    status: str  # "passed" | "failed"
    reason: str | None  # the gate's reason, or why the emulator could not run it
    headline: str | None  # the gated figure in a few words
    verdict: dict | None  # gates.Verdict.to_dict() (None when it could not run)
    cross_isa_input_px: float | None  # max 2-D joint distance from this machine's joints on the same inputs
    cross_isa_depth_mm: float | None
    seconds: float | None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def record(self) -> dict:
        """The manifest's ``verified_on`` entry."""
        d = asdict(self)
        d["isa"] = "aarch64"
        d["emulated"] = True
        return d


def host_record(runtime: str, inputs: int) -> dict:
    """The ``verified_on`` entry of this machine (where the export judged the file)."""
    return {"cpu": cpu_name(), "isa": isa(), "emulated": False, "runtime": runtime, "inputs": inputs,
            "status": "passed"}


def judged_golden_rows(manifest: Manifest, inputs: InputSet, rows: list[int]) -> Callable[[Artifact], np.ndarray]:
    """judged(art): which golden rows its cost is taken over (its judged rows; all of them if none is)."""
    def judged(art: Artifact) -> np.ndarray:
        mask = judged_mask_for(manifest, inputs, art.precision)[rows]
        return mask if mask.any() else np.ones(len(rows), dtype=bool)

    return judged


def cross_isa_distance(joints: np.ndarray, here: np.ndarray, spec) -> tuple[float, float]:
    """(max 2-D joint distance in input px, max depth difference in mm) between two runs on the same inputs."""
    xy = input_px_errors(joints, here, spec)
    depth = np.abs(joints[..., 2].astype(np.float64) - here[..., 2]) * BBOX_3D_DEPTH_MM / spec.depth_bins
    return float(np.nanmax(xy)) if np.isfinite(xy).all() else float("inf"), float(np.nanmax(depth))


def verify_on_arm64(folder: Path, artifacts: Sequence[Artifact], fed: np.ndarray, refs: References,
                    judged: Callable[[Artifact], np.ndarray], here: dict[str, np.ndarray], budgets: Budgets,
                    cpus: Sequence[CpuModel] | None = None,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, list[CpuCheck]]:
    """Each artifact of ``artifacts`` (files in ``folder``) that an arm64 runtime runs, on every CPU model.

    ``fed``: the inputs as the artifacts take them, NCHW (the worker lays them out NHWC where a file wants it);
    ``refs``: the PyTorch references on those inputs; ``judged(art)``: rows its cost is taken over;
    ``here``: file -> its joints on this machine, same inputs. ``cpus``: default every model of target.CPU_MODELS."""
    cpus = target.CPU_MODELS if cpus is None else cpus
    candidates = arm64_candidates(artifacts)
    jobs = [EmulatedJob(folder / a.file, a.runtime, a.layout, cpu) for a in candidates for cpu in cpus]
    results = run_jobs(jobs, fed, timeout_s, describe=f"arm64 ({len(cpus)} CPU models)")
    checks: dict[str, list[CpuCheck]] = {a.file: [] for a in candidates}
    for job, result in zip(jobs, results):
        art = next(a for a in candidates if a.file == job.artifact.name)
        checks[art.file].append(_check(art, job, result, refs, judged(art), here[art.file], budgets))
    for file, per_cpu in checks.items():
        for c in per_cpu:
            log.info("%s on %s: %s (%s; %s from this machine's joints)", file, c.cpu, c.status,
                     c.reason or c.headline, "-" if c.cross_isa_input_px is None else
                     f"{c.cross_isa_input_px:.2g} input px")
    return checks


def _check(art: Artifact, job: EmulatedJob, result, refs: References, judged: np.ndarray, here: np.ndarray,
           budgets: Budgets) -> CpuCheck:
    n = len(here)
    if isinstance(result, EmulationFailed):
        return CpuCheck(job.cpu.qemu_cpu, job.cpu.label, ARM64_RUNTIMES[art.runtime], n, "failed", str(result),
                        None, None, None, None, None)
    joints = result.outputs
    if joints.shape != here.shape:
        return CpuCheck(job.cpu.qemu_cpu, job.cpu.label, result.runtime, n, "failed",
                        f"output of shape {list(joints.shape)}, expected {list(here.shape)}", None, None, None, None,
                        result.seconds)
    verdict = judge(joints, art.verdict["arithmetic"], refs, judged, budgets)
    xy, depth = cross_isa_distance(joints, here, refs.spec)
    reason = None if verdict.published else f"{verdict.reason}: {verdict.describe()}"
    return CpuCheck(job.cpu.qemu_cpu, job.cpu.label, result.runtime, n, "passed" if verdict.published else "failed",
                    reason, verdict.headline(), verdict.to_dict(), xy, depth, round(result.seconds, 2))
