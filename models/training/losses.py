"""Losses on ConvNeXtPose outputs, in the network's own units (heatmap px, depth bins)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.spec import ModelSpec


@dataclass(frozen=True)
class PoseLosses:
    coordinate: torch.Tensor  # the paper's loss: mean |soft-argmax - target| over joints and x, y, z
    heatmap: torch.Tensor  # cross-entropy of the xy and z marginals against Gaussians at the target


def _gaussian(centres: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(..., size) normalised 1-D Gaussians centred at ``centres`` (...)."""
    grid = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-0.5 * ((grid - centres[..., None]) / sigma) ** 2)
    return g / g.sum(-1, keepdim=True).clamp_min(1e-12)


def pose_losses(
    logits: torch.Tensor, target: torch.Tensor, coords: torch.Tensor, spec: ModelSpec, sigma: float, scale: float = 1.0
) -> PoseLosses:
    """Both losses from one fp32 log-softmax of ``scale * logits`` (N, J*D, H, W); ``target`` (N, J, 3).

    ``coords`` is the soft-argmax's (D*H*W, 3) voxel table (``SoftArgmax3D.coords``). The heatmap
    term uses marginals, not the 3D volume: depth is far less certain than x, y, and a 3D target
    would force the xy peak as wide as the depth uncertainty. One softmax shared by both terms,
    and marginals summed from its probabilities, made the losses ~3x cheaper than separate
    softmax / log-softmax / logsumexp passes (a quarter of each training step before).
    """
    d, h, w = spec.heatmap_shape
    n = logits.shape[0]
    logp = torch.log_softmax(logits.reshape(n, spec.joints, d * h * w).float().mul(scale), dim=2)
    p = logp.exp()
    coordinate = (torch.matmul(p, coords) - target).abs().mean()
    p = p.view(n, spec.joints, d, h * w)
    # clamp: a marginal below 1e-30 only meets a Gaussian weight that is ~0 there
    logp_xy = p.sum(2).clamp_min(1e-30).log().view(n, spec.joints, h, w)
    logp_z = p.sum(3).clamp_min(1e-30).log()
    gx, gy, gz = (_gaussian(target[..., i], size, sigma) for i, size in enumerate((w, h, d)))
    xy = -(gy[..., :, None] * gx[..., None, :] * logp_xy).sum((2, 3))
    z = -(gz * logp_z).sum(2)
    return PoseLosses(coordinate=coordinate, heatmap=(xy + z).mean())
