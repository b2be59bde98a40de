"""What goes in and what comes out of every artifact: the tensor names, the input contract, the output
description (units, and how an app turns joints into photo pixels and millimetres)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.preprocessing import normalise
from models.spec import BBOX_3D_DEPTH_MM, IMAGENET_MEAN, IMAGENET_STD, ModelSpec

#: Input and output names every artifact shares (the app contract).
INPUT_NAME = "image"
OUTPUT_NAME = "joints"


@dataclass(frozen=True)
class InputContract:
    """What goes into every artifact (layouts differ per format and are stated per artifact)."""

    name: str
    shape_nchw: tuple[int, int, int, int]
    dtype: str
    value_range: tuple[float, float]
    normalization_folded: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_spec(cls, spec: ModelSpec, fold_normalization: bool) -> "InputContract":
        s = spec.input_size
        if fold_normalization:
            value_range = (0.0, 1.0)
        else:  # the range of ImageNet-normalised [0,1] RGB
            lo = min((0 - m) / sd for m, sd in zip(IMAGENET_MEAN, IMAGENET_STD))
            hi = max((1 - m) / sd for m, sd in zip(IMAGENET_MEAN, IMAGENET_STD))
            value_range = (round(lo, 4), round(hi, 4))
        return cls(INPUT_NAME, (1, spec.in_chans, s, s), "float32", value_range, fold_normalization,
                   IMAGENET_MEAN, IMAGENET_STD)

    def describe(self) -> str:
        if self.normalization_folded:
            return "RGB / 255 in [0, 1]; ImageNet mean/std are folded into the model"
        return "RGB / 255, then (x - mean) / std with ImageNet mean/std, done by the caller"

    def prepare(self, rgb01: np.ndarray) -> np.ndarray:
        """Turn (N, 3, H, W) RGB in [0, 1] into what the artifacts take (NCHW)."""
        if self.normalization_folded:
            return rgb01.astype(np.float32)
        return normalise(rgb01)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape_nchw": list(self.shape_nchw),
            "value_range": list(self.value_range),
            "channel_order": "RGB",
            "normalization_folded": self.normalization_folded,
            "preprocessing": self.describe(),
            "imagenet_mean": list(self.mean),
            "imagenet_std": list(self.std),
        }


def output_description(spec: ModelSpec) -> dict[str, Any]:
    d, h, w = spec.heatmap_shape
    s = spec.input_size
    return {
        "name": OUTPUT_NAME,
        "shape": [1, spec.joints, 3],
        "dtype": "float32",
        "units": "x, y in heatmap pixels; z in depth bins (soft-argmax expectation)",
        "heatmap_shape_dhw": [d, h, w],
        "to_input_pixels": f"x_px = x * {s} / {w}; y_px = y * {s} / {h}",
        "to_original_image": "x_img = bbox_x + x_px * bbox_w / " f"{s}; y_img = bbox_y + y_px * bbox_h / {s}",
        "to_depth_mm": f"z_mm = (z / {d} * 2 - 1) * {BBOX_3D_DEPTH_MM / 2:g}  (relative to the root joint)",
    }
