"""One parity check for every format: artifact joints vs the PyTorch reference, in task units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.checkpoint import LoadedCheckpoint
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec


def reference_joints(loaded: LoadedCheckpoint, rgb01: np.ndarray) -> np.ndarray:
    """The PyTorch fp32 reference: the checkpoint's own model on ImageNet-normalised RGB."""
    import torch

    from exporters.contract import normalise

    with torch.no_grad():
        return loaded.build_model()(torch.from_numpy(normalise(rgb01))).numpy()


@dataclass(frozen=True)
class ParityReport:
    """Errors against the PyTorch fp32 reference; heatmap px for x/y, depth bins for z."""

    max_abs_px: float  # max over x, y, z of every joint and input (the gated number, unless p99-gated)
    mean_abs_px: float
    max_abs_xy_px: float
    max_abs_input_px: float  # max x/y error scaled to input-image pixels
    max_abs_depth_mm: float
    n_inputs: int
    tolerance_px: float
    p99_xy_judged_px: float  # p99 of the 2-D joint error over the judged inputs
    n_judged: int
    gate: str = "max"  # "max": max_abs_px is gated; "p99": p99_xy_judged_px is

    @property
    def gated_px(self) -> float:
        return self.p99_xy_judged_px if self.gate == "p99" else self.max_abs_px

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_px)) and self.gated_px <= self.tolerance_px

    def describe(self) -> str:
        what = (f"p99 2-D error {self.p99_xy_judged_px:.4g} heatmap px over {self.n_judged} judged inputs"
                if self.gate == "p99" else f"max |delta| {self.max_abs_px:.4g} heatmap px")
        return (f"{what} {'<=' if self.passed else '>'} tolerance {self.tolerance_px:g} (max |delta| "
                f"{self.max_abs_px:.4g}, mean {self.mean_abs_px:.4g}, {self.max_abs_input_px:.4g} input px, "
                f"{self.max_abs_depth_mm:.4g} mm over {self.n_inputs} inputs)")

    def to_dict(self) -> dict:
        return {
            "status": "passed" if self.passed else "failed",
            "max_abs_px": self.max_abs_px,
            "mean_abs_px": self.mean_abs_px,
            "max_abs_xy_px": self.max_abs_xy_px,
            "max_abs_input_px": self.max_abs_input_px,
            "max_abs_depth_mm": self.max_abs_depth_mm,
            "n_inputs": self.n_inputs,
            "tolerance_px": self.tolerance_px,
            "gate": self.gate,
            "p99_xy_judged_px": self.p99_xy_judged_px,
            "n_judged": self.n_judged,
        }


def compare_joints(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec, tolerance_px: float,
                   judged: np.ndarray | None = None, gate: str = "max") -> ParityReport:
    """``judged``: boolean row mask of the inputs the p99 figure is taken over (default all)."""
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    if gate not in ("max", "p99"):
        raise ValueError(f"unknown gate {gate!r}")
    delta = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    xy = delta[..., :2]
    judged = np.ones(len(delta), dtype=bool) if judged is None else judged
    err2d_judged = np.linalg.norm(xy[judged], axis=-1)
    return ParityReport(
        max_abs_px=float(delta.max()),
        mean_abs_px=float(delta.mean()),
        max_abs_xy_px=float(xy.max()),
        max_abs_input_px=float(xy.max() * spec.input_size / spec.heatmap_size),
        max_abs_depth_mm=float(delta[..., 2].max() * BBOX_3D_DEPTH_MM / spec.depth_bins),
        n_inputs=int(reference.shape[0]),
        tolerance_px=tolerance_px,
        p99_xy_judged_px=float(np.percentile(err2d_judged, 99)),
        n_judged=int(judged.sum()),
        gate=gate,
    )


def gate_for(fmt: str, precision: str) -> tuple[float, str]:
    """(tolerance, gate statistic) of an artifact: the one table in exporters.tolerances."""
    from exporters.tolerances import P99_GATED, tolerance_for

    return tolerance_for(fmt, precision), "p99" if precision in P99_GATED else "max"


def check(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec, fmt: str, precision: str,
          judged: np.ndarray | None = None) -> ParityReport:
    """compare_joints with the tolerance and gate statistic the table gives (fmt, precision)."""
    tolerance, gate = gate_for(fmt, precision)
    return compare_joints(candidate, reference, spec, tolerance, judged, gate)
