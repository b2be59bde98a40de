"""Losses on ConvNeXtPose outputs, in the network's own units (heatmap px, depth bins)."""

from __future__ import annotations

import torch

from models.spec import ModelSpec


def coordinate_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's loss: mean |soft-argmax - target| over joints and x, y, z."""
    return (pred - target).abs().mean()


def _gaussian(centres: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(..., size) normalised 1-D Gaussians centred at ``centres`` (...)."""
    grid = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-0.5 * ((grid - centres[..., None]) / sigma) ** 2)
    return g / g.sum(-1, keepdim=True).clamp_min(1e-12)


def heatmap_aux_loss(logits: torch.Tensor, target: torch.Tensor, spec: ModelSpec, sigma: float) -> torch.Tensor:
    """Cross-entropy of the 3D softmax's xy and z marginals against Gaussians at ``target`` (N, J, 3).

    Marginals, not the 3D volume: depth is far less certain than x, y, and a 3D target would
    force the xy peak as wide as the depth uncertainty.
    """
    d, h, w = spec.heatmap_shape
    n = logits.shape[0]
    logp = torch.log_softmax(logits.reshape(n, spec.joints, -1), dim=2).reshape(n, spec.joints, d, h, w)
    logp_xy = torch.logsumexp(logp, dim=2)  # (N, J, H, W)
    logp_z = torch.logsumexp(logp.flatten(3), dim=3)  # (N, J, D)
    gx, gy, gz = (_gaussian(target[..., i], size, sigma) for i, size in enumerate((w, h, d)))
    xy = -(gy[..., :, None] * gx[..., None, :] * logp_xy).sum((2, 3))
    z = -(gz * logp_z).sum(2)
    return (xy + z).mean()
