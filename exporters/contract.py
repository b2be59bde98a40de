"""The input contract every artifact shares, and folding ImageNet normalisation into the stem.

Folding is exact: the stem is a 4x4/stride-4 convolution without padding, so every input pixel
enters it through a weight, and (x - m)/s can be absorbed as W' = W/s, b' = b - sum(W*m/s).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from models.network import ConvNeXtPose
from models.preprocessing import normalise
from models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from runtimes.session import INPUT_NAME, OUTPUT_NAME

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "InputContract", "fold_normalization"]


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


def fold_normalization(model: ConvNeXtPose) -> ConvNeXtPose:
    """A copy of ``model`` that takes RGB in [0, 1] and computes exactly what ``model`` computes on normalised input."""
    folded = copy.deepcopy(model)
    stem = folded.backbone.downsample_layers[0][0]
    if stem.padding != (0, 0):
        raise ValueError("normalisation can be folded only into an unpadded stem convolution")
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        weight = stem.weight.double()
        new_weight = weight / std
        new_bias = stem.bias.double() - (new_weight * mean).sum(dim=(1, 2, 3))
        stem.weight.copy_(new_weight.float())
        stem.bias.copy_(new_bias.float())
    return folded.eval()
