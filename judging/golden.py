"""Judging joints an app produced on the phone against the golden vectors of an export
(``convnextpose check-golden OUT RESULTS.json``; the vectors are written by exporters/app_files/golden.py).

Two tolerances per artifact, per joint, 2-D distance in input px from the artifact's own golden joints:

- **CPU** (``tolerance_input_px``, the default): the file on a phone's CPU in the same runtime. Once
  the file was verified on the emulated arm64 cores (judging/cross_isa.py) it is what that measurement
  supports: ``CROSS_ISA_MARGIN`` x the largest difference seen between this machine and those cores,
  never below the export's fp32 tolerance (another CPU is another summation order: judging/gates.py)
  and never above the precision budget. Not verified on arm64: an fp32 file its fp32 tolerance, a
  reduced-precision file its budget (nothing measured says a kernel difference is smaller).
- **Delegate** (``delegate_tolerance_input_px``, ``--tolerance delegate``): a GPU or NPU delegate
  computes in fp16 or its own integer kernels. Once the file was verified on LiteRT's GPU accelerator
  (judging/on_gpu.py) it is ``GPU_MARGIN`` x the distance measured there, between the fp32 tolerance and the
  budget; otherwise the precision budget: fp16's for a float file (a GPU delegate runs fp32 files in fp16),
  the file's own otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConvNeXtPoseError
from common.files import write_atomic
from common.tables import format_table
from judging.gates import fp32_tolerance_px
from judging.manifest import Artifact, Manifest
from judging.on_gpu import gpu_input_px
from models.spec import BBOX_3D_DEPTH_MM

GOLDEN_DIR = "golden"
GOLDEN_JSON = "golden.json"
FORMAT_VERSION = 1


#: CPU tolerance = this x the largest cross-ISA difference measured: the two emulated cores are two of the
#: phones' kernel paths (with and without dot product); a newer core (i8mm, another XNNPACK microkernel)
#: may round differently again, by the same order (measured: int8 files 0.2-1.5 px apart between cores).
CROSS_ISA_MARGIN = 2.0
#: Delegate tolerance = this x the largest difference measured on LiteRT's GPU accelerator (fp16): one GPU's
#: kernels on lavapipe; another GPU, or an NPU, sums in its own order, by the same order of magnitude.
GPU_MARGIN = 2.0
TOLERANCES = ("cpu", "delegate")


def fp32_tolerance_input_px(manifest: Manifest) -> float:
    """The export's fp32 gate in input px (NOISE_FACTOR x its noise floor, at least FLOOR_INPUT_PX)."""
    spec, gates = manifest.spec, manifest.gates
    return fp32_tolerance_px(gates["fp32_noise_floor_px"], spec) * spec.input_size / spec.heatmap_size


@dataclass(frozen=True)
class Tolerance:
    input_px: float
    basis: str  # why it is what it is, in words for the app developer


def cpu_tolerance(art: Artifact, manifest: Manifest) -> Tolerance:
    """Input px a result on another CPU may move from this artifact's golden joints (module docstring)."""
    floor = fp32_tolerance_input_px(manifest)
    budget = art.verdict.get("budget_input_px")
    measured = art.cross_isa_input_px
    if measured and all(np.isfinite(list(measured.values()))):
        worst_cpu, worst = max(measured.items(), key=lambda kv: kv[1])
        value = max(floor, CROSS_ISA_MARGIN * worst)
        basis = (f"{CROSS_ISA_MARGIN:g} x the largest difference measured between this machine and the emulated "
                 f"arm64 cores ({worst:.3g} input px on {worst_cpu}), at least the fp32 tolerance {floor:.3g}")
        if budget is not None and value > budget:
            value, basis = budget, f"the precision budget (the measured cross-CPU difference x {CROSS_ISA_MARGIN:g} " \
                                   "exceeds it)"
        return Tolerance(value, basis)
    if budget is None:
        return Tolerance(floor, "the fp32 tolerance: another CPU sums in another order (noise floor x factor)")
    return Tolerance(budget, "the precision budget: not verified on another CPU, so no measured kernel difference "
                             "(convnextpose verify OUT --arch arm64 measures it)")


def delegate_tolerance(art: Artifact, manifest: Manifest) -> Tolerance:
    """Input px a result on a GPU or NPU delegate may move from this artifact's golden joints. Once the file was
    verified on LiteRT's GPU accelerator (judging/on_gpu.py): GPU_MARGIN x the distance measured there, at
    least the fp32 tolerance, at most the budget; otherwise the budget."""
    budgets = manifest.gates["budgets_input_px"]
    budget = art.verdict.get("budget_input_px")
    if budget is None:
        budget, why = budgets["fp16"], "the fp16 budget: a GPU delegate computes an fp32 file in fp16"
    else:
        why = "the file's precision budget: a delegate's own kernels round in other places"
    measured = gpu_input_px(art)
    if measured is None or not np.isfinite(measured):
        return Tolerance(budget, why + " (convnextpose verify OUT --gpu measures the GPU accelerator's)")
    value = max(fp32_tolerance_input_px(manifest), GPU_MARGIN * measured)
    if value >= budget:
        return Tolerance(budget, why + f" ({GPU_MARGIN:g} x the {measured:.3g} input px measured on LiteRT's GPU "
                                       "accelerator exceeds it)")
    return Tolerance(value, f"{GPU_MARGIN:g} x the largest difference measured between this machine and LiteRT's GPU "
                            f"accelerator in fp16 ({measured:.3g} input px), at least the fp32 tolerance")


def tolerance_fields(art: Artifact, manifest: Manifest) -> dict:
    """golden.json's tolerance entries of one artifact (written at export, rewritten by an arm64 verify)."""
    cpu, delegate = cpu_tolerance(art, manifest), delegate_tolerance(art, manifest)
    return {"tolerance_input_px": cpu.input_px, "tolerance_basis": cpu.basis,
            "delegate_tolerance_input_px": delegate.input_px, "delegate_tolerance_basis": delegate.basis,
            "cross_isa_input_px": art.cross_isa_input_px}


def update_tolerances(out_dir: Path, manifest: Manifest) -> None:
    """Rewrite golden.json's tolerances from ``manifest`` (new cross-ISA measurements); joints untouched."""
    path = Path(out_dir) / GOLDEN_DIR / GOLDEN_JSON
    golden = json.loads(path.read_text())
    for art in manifest.artifacts:
        if art.file in golden["artifacts"]:
            golden["artifacts"][art.file].update(tolerance_fields(art, manifest))
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(golden, indent=1) + "\n"))


@dataclass(frozen=True)
class JointCheck:
    input_id: str
    joint: str
    error_input_px: float
    depth_error_mm: float
    tolerance_input_px: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error_input_px)) and self.error_input_px <= self.tolerance_input_px


def check(out_dir: Path, results: dict, budget_family: str | None = None,
          tolerance: str = "cpu") -> tuple[str, list[JointCheck]]:
    """Judge ``results`` ({"artifact": file, "joints": {input id: J x 3}}) against OUT's golden vectors.
    ``tolerance``: "cpu" (the file on a phone's CPU) or "delegate" (on a GPU/NPU delegate);
    ``budget_family`` ("fp16", "int8"): that precision budget instead of either."""
    if tolerance not in TOLERANCES:
        raise ConvNeXtPoseError(f"tolerance {tolerance!r}: choose from {', '.join(TOLERANCES)}")
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    path = out_dir / GOLDEN_DIR / GOLDEN_JSON
    if not path.is_file():
        raise ConvNeXtPoseError(f"{path} not found: re-export (golden vectors are written by every export)")
    golden = json.loads(path.read_text())
    name = results.get("artifact")
    if name not in golden["artifacts"]:
        raise ConvNeXtPoseError(f"results name artifact {name!r}; {path} has golden joints for "
                                f"{', '.join(golden['artifacts'])}")
    manifest.refuse_tampered(out_dir, {name})  # golden joints are only worth something for the verified file
    entry = golden["artifacts"][name]
    allowed = entry["tolerance_input_px"] if tolerance == "cpu" else entry.get(
        "delegate_tolerance_input_px", entry["tolerance_input_px"])
    if budget_family:
        allowed = manifest.gates["budgets_input_px"][budget_family]
    spec = manifest.spec
    to_input, to_mm = spec.input_size / spec.heatmap_size, BBOX_3D_DEPTH_MM / spec.depth_bins
    checks = []
    for input_id, expected in entry["joints"].items():
        got = results.get("joints", {}).get(input_id)
        if got is None:
            raise ConvNeXtPoseError(f"results have no joints for golden input {input_id!r}")
        got, expected = np.asarray(got, dtype=np.float64).reshape(-1, 3), np.asarray(expected, dtype=np.float64)
        if got.shape != expected.shape:
            raise ConvNeXtPoseError(f"results for {input_id}: joints of shape {list(got.shape)}, expected "
                                    f"{list(expected.shape)}")
        err = np.linalg.norm(got[:, :2] - expected[:, :2], axis=1) * to_input
        depth = np.abs(got[:, 2] - expected[:, 2]) * to_mm
        checks += [JointCheck(input_id, j, float(e), float(d), allowed)
                   for j, e, d in zip(golden["joint_names"], err, depth)]
    return name, checks


def report(name: str, checks: list[JointCheck]) -> str:
    rows = []
    for input_id in dict.fromkeys(c.input_id for c in checks):
        mine = [c for c in checks if c.input_id == input_id]
        worst = max(mine, key=lambda c: c.error_input_px)
        failed = [c.joint for c in mine if not c.passed]
        rows.append((input_id, f"{worst.error_input_px:.3g}", worst.joint, f"{worst.tolerance_input_px:.3g}",
                     f"{max(c.depth_error_mm for c in mine):.3g}",
                     "ok" if not failed else f"FAIL: {', '.join(failed)}"))
    table = format_table(("input", "max 2-D error input px", "at joint", "tolerance", "max depth error mm",
                          "verdict per joint"), rows)
    passed = sum(c.passed for c in checks)
    return f"{name}: {passed} of {len(checks)} joints within tolerance\n{table}"
