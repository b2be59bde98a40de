"""The one parity statistic: artifact joints vs a PyTorch reference, in task units.

Units: x, y in heatmap px and z in depth bins, as the network outputs them; each statistic is also
given in what an app sees (input px of the crop, mm of depth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.checkpoint import LoadedCheckpoint
from models.preprocessing import normalise
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec

PCK_THRESHOLDS_PX = (0.5, 1.0)  # heatmap px
PCK_INPUT_PX = (1.0, 4.0)  # input px


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
    mean_input_px: float  # the 2-D error in px of the input crop (what an app draws)
    p99_input_px: float
    max_input_px: float
    mean_depth_mm: float
    p99_depth_mm: float
    max_depth_mm: float
    pck_05: float  # share of joints within 0.5 heatmap px of the reference
    pck_10: float
    pck_1_input_px: float  # share of joints within 1 input px
    pck_4_input_px: float
    per_joint_mean_px: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "per_joint_mean_px": list(self.per_joint_mean_px)}

    def describe(self) -> str:
        return (f"p99 {self.p99_input_px:.3g} input px (mean {self.mean_input_px:.3g}, max {self.max_input_px:.3g}; "
                f"depth p99 {self.p99_depth_mm:.3g} mm) over {self.n_inputs} inputs")


def input_px_errors(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, J) 2-D joint error in px of the input crop."""
    delta = candidate.astype(np.float64) - reference.astype(np.float64)
    return np.linalg.norm(delta[..., :2], axis=-1) * spec.input_size / spec.heatmap_size


def parity_stats(candidate: np.ndarray, reference: np.ndarray, spec: ModelSpec) -> ParityStats:
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    delta = candidate.astype(np.float64) - reference.astype(np.float64)
    err2d = np.linalg.norm(delta[..., :2], axis=-1)  # (N, J)
    depth_mm = np.abs(delta[..., 2]) * BBOX_3D_DEPTH_MM / spec.depth_bins
    err_input = input_px_errors(candidate, reference, spec)
    return ParityStats(
        n_inputs=int(reference.shape[0]),
        max_abs_px=float(np.abs(delta).max()),
        mean_abs_px=float(np.abs(delta).mean()),
        max_abs_xy_px=float(np.abs(delta[..., :2]).max()),
        mean_px=float(err2d.mean()),
        p99_px=float(np.percentile(err2d, 99)),
        max_px=float(err2d.max()),
        mean_input_px=float(err_input.mean()),
        p99_input_px=float(np.percentile(err_input, 99)),
        max_input_px=float(err_input.max()),
        mean_depth_mm=float(depth_mm.mean()),
        p99_depth_mm=float(np.percentile(depth_mm, 99)),
        max_depth_mm=float(depth_mm.max()),
        pck_05=float((err2d <= PCK_THRESHOLDS_PX[0]).mean()),
        pck_10=float((err2d <= PCK_THRESHOLDS_PX[1]).mean()),
        pck_1_input_px=float((err_input <= PCK_INPUT_PX[0]).mean()),
        pck_4_input_px=float((err_input <= PCK_INPUT_PX[1]).mean()),
        per_joint_mean_px=tuple(float(v) for v in err2d.mean(axis=0)),
    )
