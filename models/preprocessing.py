"""The network's input normalisation, written once for NumPy arrays and torch tensors alike."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from models.spec import IMAGENET_MEAN, IMAGENET_STD

Images = TypeVar("Images", np.ndarray, torch.Tensor)


def normalise(rgb01: Images) -> Images:
    """(N, 3, H, W) RGB in [0, 1] -> ImageNet-normalised, as the released network expects.

    NumPy input gives float32 (what every runtime takes); a tensor keeps its dtype.
    """
    if isinstance(rgb01, torch.Tensor):
        mean = torch.tensor(IMAGENET_MEAN, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
        return (rgb01 - mean) / std
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((rgb01 - mean) / std).astype(np.float32)
