"""The one parity statistic (artifact joints vs the PyTorch reference, in task units) and the gate.

Units: x, y in heatmap px and z in depth bins, as the network outputs them; each statistic is also
given in what an app sees (input px of the crop, mm of depth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.checkpoint import LoadedCheckpoint
from models.preprocessing import normalise
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec

PCK_THRESHOLDS_PX = (0.5, 1.0)


def reference_joints(loaded: LoadedCheckpoint, rgb01: np.ndarray) -> np.ndarray:
    """The PyTorch fp32 reference: the checkpoint's own model on ImageNet-normalised RGB."""
    import torch

    with torch.no_grad():
        return loaded.build_model()(torch.from_numpy(normalise(rgb01))).numpy()


@dataclass(frozen=True)
class ParityStats:
    """Errors of a set of joints against the reference.

    2-D joint error = Euclidean distance of (x, y) in heatmap px; ``max_abs_px`` / ``mean_abs_px``
    take every coordinate (x, y in px, z in depth bins) on its own; depth error = |dz| in mm.
    """

    n_inputs: int
    max_abs_px: float
    mean_abs_px: float
    max_abs_xy_px: float
    mean_px: float
    p99_px: float
    max_px: float
    max_input_px: float  # max 2-D error in input-image px
    mean_depth_mm: float
    max_depth_mm: float
    pck_05: float  # share of joints within 0.5 heatmap px of the reference
    pck_10: float
    per_joint_mean_px: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "per_joint_mean_px": list(self.per_joint_mean_px)}


def parity_stats(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec) -> ParityStats:
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    delta = candidate.astype(np.float64) - reference.astype(np.float64)
    err2d = np.linalg.norm(delta[..., :2], axis=-1)  # (N, J)
    depth_mm = np.abs(delta[..., 2]) * BBOX_3D_DEPTH_MM / spec.depth_bins
    to_input = spec.input_size / spec.heatmap_size
    return ParityStats(
        n_inputs=int(reference.shape[0]),
        max_abs_px=float(np.abs(delta).max()),
        mean_abs_px=float(np.abs(delta).mean()),
        max_abs_xy_px=float(np.abs(delta[..., :2]).max()),
        mean_px=float(err2d.mean()),
        p99_px=float(np.percentile(err2d, 99)),
        max_px=float(err2d.max()),
        max_input_px=float(err2d.max() * to_input),
        mean_depth_mm=float(depth_mm.mean()),
        max_depth_mm=float(depth_mm.max()),
        pck_05=float((err2d <= PCK_THRESHOLDS_PX[0]).mean()),
        pck_10=float((err2d <= PCK_THRESHOLDS_PX[1]).mean()),
        per_joint_mean_px=tuple(float(v) for v in err2d.mean(axis=0)),
    )


@dataclass(frozen=True)
class ParityReport:
    """An artifact's gate: statistics over every input and over the judged ones, and the tolerance."""

    all: ParityStats
    judged: ParityStats
    tolerance_px: float
    gate: str = "max"  # "max": all.max_abs_px is gated; "p99": judged.p99_px is

    @property
    def max_abs_px(self) -> float:
        return self.all.max_abs_px

    @property
    def p99_xy_judged_px(self) -> float:
        return self.judged.p99_px

    @property
    def gated_px(self) -> float:
        return self.judged.p99_px if self.gate == "p99" else self.all.max_abs_px

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.all.max_abs_px)) and self.gated_px <= self.tolerance_px

    def describe(self) -> str:
        a = self.all
        what = (f"p99 2-D error {self.judged.p99_px:.4g} heatmap px over {self.judged.n_inputs} judged inputs"
                if self.gate == "p99" else f"max |delta| {a.max_abs_px:.4g} heatmap px")
        return (f"{what} {'<=' if self.passed else '>'} tolerance {self.tolerance_px:g} (max |delta| "
                f"{a.max_abs_px:.4g}, mean {a.mean_abs_px:.4g}, {a.max_input_px:.4g} input px, "
                f"{a.max_depth_mm:.4g} mm over {a.n_inputs} inputs)")

    def to_dict(self) -> dict:
        a = self.all
        return {
            "status": "passed" if self.passed else "failed",
            "max_abs_px": a.max_abs_px,
            "mean_abs_px": a.mean_abs_px,
            "max_abs_xy_px": a.max_abs_xy_px,
            "max_abs_input_px": a.max_input_px,
            "max_abs_depth_mm": a.max_depth_mm,
            "n_inputs": a.n_inputs,
            "tolerance_px": self.tolerance_px,
            "gate": self.gate,
            "p99_xy_judged_px": self.judged.p99_px,
            "n_judged": self.judged.n_inputs,
        }


def compare_joints(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec, tolerance_px: float,
                   judged: np.ndarray | None = None, gate: str = "max") -> ParityReport:
    """``judged``: boolean row mask of the inputs the p99 figure is taken over (default all)."""
    if gate not in ("max", "p99"):
        raise ValueError(f"unknown gate {gate!r}")
    judged = np.ones(len(reference), dtype=bool) if judged is None else judged
    return ParityReport(parity_stats(candidate, reference, spec),
                        parity_stats(candidate[judged], reference[judged], spec), tolerance_px, gate)


def check(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec, fmt: str, precision: str,
          judged: np.ndarray | None = None) -> ParityReport:
    """compare_joints with the tolerance and gate statistic the one table gives (fmt, precision)."""
    from exporters.tolerances import P99_GATED, tolerance_for

    gate = "p99" if precision in P99_GATED else "max"
    return compare_joints(candidate, reference, spec, tolerance_for(fmt, precision), judged, gate)
