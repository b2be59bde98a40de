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

    max_abs_px: float  # max over x, y, z of every joint and input (the gated number)
    mean_abs_px: float
    max_abs_xy_px: float
    max_abs_input_px: float  # max x/y error scaled to input-image pixels
    max_abs_depth_mm: float
    n_inputs: int
    tolerance_px: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_px)) and self.max_abs_px <= self.tolerance_px

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
        }


def compare_joints(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec, tolerance_px: float) -> ParityReport:
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    delta = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    xy = delta[..., :2]
    return ParityReport(
        max_abs_px=float(delta.max()),
        mean_abs_px=float(delta.mean()),
        max_abs_xy_px=float(xy.max()),
        max_abs_input_px=float(xy.max() * spec.input_size / spec.heatmap_size),
        max_abs_depth_mm=float(delta[..., 2].max() * BBOX_3D_DEPTH_MM / spec.depth_bins),
        n_inputs=int(reference.shape[0]),
        tolerance_px=tolerance_px,
    )
