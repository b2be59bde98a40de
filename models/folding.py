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


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """eval-mode ``bn`` as y = scale * x + shift per channel, in float64."""
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.detach().double() - bn.running_mean.double() * scale


def fold_batchnorm_into_next(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """eval-mode ``bn`` followed by an unpadded, ungrouped ``conv``, as one conv. Exact only without
    padding: a padded conv would see the zeros its padding adds unshifted."""
    if conv.padding != (0, 0) or conv.groups != 1:
        raise ValueError(f"a BatchNorm folds into the next conv only if it is unpadded and ungrouped, got {conv}")
    scale, shift = _bn_affine(bn)
    fused = copy.deepcopy(conv)
    weight = conv.weight.detach().double()
    with torch.no_grad():
        fused.weight.copy_((weight * scale.view(1, -1, 1, 1)).float())
        fused.bias.copy_((conv.bias.detach().double() + (weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))).float())
    return fused


def batchnorm_as_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """eval-mode ``bn`` as a 1x1 depthwise conv: the same per-channel scale and shift, as an op every
    converter and mobile runtime takes (a lone BatchNorm is not one: ORT's NNAPI/Core ML checkers)."""
    c = bn.num_features
    conv = nn.Conv2d(c, c, 1, groups=c)
    scale, shift = _bn_affine(bn)
    with torch.no_grad():
        conv.weight.copy_(scale.float().view(c, 1, 1, 1))
        conv.bias.copy_(shift.float())
    return conv.eval()


def without_batchnorm(model: ConvNeXtPose) -> ConvNeXtPose:
    """A copy of ``model`` without a BatchNorm layer, computing the same: every BatchNorm after a conv
    folded into it (stem, blocks, head), before an unpadded conv into that conv (downsampling), and the
    backbone's last one, which sits between a residual sum and a padded conv, as a 1x1 depthwise conv.
    Module names stay, so layer boundaries (``diagnose``) still find their layers."""
    folded = copy.deepcopy(model).eval()
    layers = folded.backbone.downsample_layers
    layers[0][0], layers[0][1] = fold_batchnorm(layers[0][0], layers[0][1]), nn.Identity()
    for downsample in layers[1:]:
        downsample[0], downsample[1] = nn.Identity(), fold_batchnorm_into_next(downsample[0], downsample[1])
    for layer in (m for m in folded.modules() if hasattr(m, "dwconv") and isinstance(getattr(m, "norm", None),
                                                                                       nn.BatchNorm2d)):
        layer.dwconv, layer.norm = fold_batchnorm(layer.dwconv, layer.norm), nn.Identity()
    folded.backbone.norm = batchnorm_as_conv(folded.backbone.norm)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"BatchNorm layers this fold does not know: {', '.join(left)}")
    return folded
