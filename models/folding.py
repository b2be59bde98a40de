"""Exact rewrites that fold one layer into the one before it, so a graph computes the same with fewer ops.

- ImageNet normalisation into the stem: the stem is a 4x4/stride-4 convolution without padding, so
  every input pixel enters it through a weight, and (x - m)/s can be absorbed as W' = W/s,
  b' = b - sum(W*m/s).
- an eval-mode BatchNorm into the convolution it follows (what converters do themselves, done here
  where a rewrite needs it first: the XNNPACK split of the 7x7 depthwise conv, the references).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.network import ConvNeXtPose
from models.spec import IMAGENET_MEAN, IMAGENET_STD


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


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode bn, as one conv (exporters fold this pair themselves, but not
    once the conv is split into a sum, so it is folded before splitting)."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        fused.weight.mul_(scale.view(-1, 1, 1, 1))
        fused.bias.copy_((conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach())
    return fused
