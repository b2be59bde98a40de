"""From the network's output to what an app draws: image coordinates and root-relative millimetres.

Small on purpose, numpy only: the Swift and Kotlin snippets of docs/app-integration.md mirror it line by line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.spec import BBOX_3D_DEPTH_MM  # 2000 mm: the depth range the D bins span, centred on the root


@dataclass(frozen=True)
class Pose:
    xy: np.ndarray  # (J, 2) joint positions in the photo, pixels
    depth_mm: np.ndarray  # (J,) depth relative to the root joint (Pelvis), millimetres, away from the camera


def decode(joints: np.ndarray, box: tuple[float, float, float, float], heatmap_dhw: tuple[int, int, int]) -> Pose:
    """``joints`` (J, 3) or (1, J, 3) as a model gives them -- x, y in heatmap pixels, z in depth bins --
    for the crop ``box`` = (x, y, width, height) of the photo that was resized to the model's input.

    The input size cancels out: x / W is the position across the crop whatever its pixel size."""
    d, h, w = heatmap_dhw
    j = np.asarray(joints, dtype=np.float64).reshape(-1, 3)
    box_x, box_y, box_w, box_h = box
    x = box_x + j[:, 0] / w * box_w
    y = box_y + j[:, 1] / h * box_h
    depth_mm = (j[:, 2] / d * 2.0 - 1.0) * (BBOX_3D_DEPTH_MM / 2.0)
    return Pose(np.stack([x, y], axis=1), depth_mm)
