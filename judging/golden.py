"""Judging joints an app produced on the phone against the golden vectors of an export
(``convnextpose check-golden OUT RESULTS.json``; the vectors are written by exporters/app_files/golden.py).

Tolerances, per joint, 2-D distance in input px from the artifact's own golden joints: an fp32 file
its fp32 tolerance (another CPU is another summation order: judging/gates.py); an fp16 or integer
file its precision budget (another runtime rounds in other places; a GPU delegate computes an fp32
file in fp16 too: judge it with the fp16 budget, ``--budget fp16``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import ConvNeXtPoseError
from common.tables import format_table
from judging.manifest import Artifact, Manifest
from models.spec import BBOX_3D_DEPTH_MM

GOLDEN_DIR = "golden"
GOLDEN_JSON = "golden.json"
FORMAT_VERSION = 1


def artifact_tolerance(art: Artifact) -> float:
    """Input px a result produced elsewhere may move from this artifact's golden joints."""
    v = art.verdict
    return v["conversion"]["tolerance_input_px"] if v["conversion"] else v["budget_input_px"]


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


def check(out_dir: Path, results: dict, budget_family: str | None = None) -> tuple[str, list[JointCheck]]:
    """Judge ``results`` ({"artifact": file, "joints": {input id: J x 3}}) against OUT's golden vectors.
    ``budget_family`` ("fp16"): hold it to that budget instead (a GPU delegate running an fp32 file)."""
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
    tolerance = entry["tolerance_input_px"]
    if budget_family:
        tolerance = manifest.gates["budgets_input_px"][budget_family]
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
        checks += [JointCheck(input_id, j, float(e), float(d), tolerance)
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
