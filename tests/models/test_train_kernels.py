"""The training-only fast paths compute the same maths as the plain modules they stand in for."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.network import SoftArgmax3D
from models.spec import ModelSpec
from models.synthetic.untrained import synthetic_model
from models.training.kernels import fast_depthwise
from models.training.losses import _gaussian, pose_losses

TINY = ModelSpec("tiny", depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), head_channels=8, num_upsample=2, depth_bins=8,
                 input_size=64)


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = model.heatmaps(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()  # a gradient that differs per element
    return x.grad, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_depthwise_gives_the_gradients_of_the_plain_convolutions(channels_last):
    torch.manual_seed(0)
    model = synthetic_model(TINY, 0).train().double()  # double: the comparison is not blurred by rounding
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ref_x, ref = _grads(model, x)
    with fast_depthwise(model):
        fast_x, fast = _grads(model, x)
    torch.testing.assert_close(fast_x, ref_x)
    for name in ref:  # the depthwise weights and biases included
        torch.testing.assert_close(fast[name].double(), ref[name], msg=name)
    assert any("dwconv.weight" in n and ref[n].abs().sum() > 0 for n in ref)


def test_fast_depthwise_leaves_the_model_as_it_was():
    model = synthetic_model(TINY, 0).eval()
    x = torch.rand(2, 3, 64, 64)
    before, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    with fast_depthwise(model):
        pass
    assert all("forward" not in vars(m) for m in model.modules())
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert state.keys() == model.state_dict().keys()


def _reference_losses(logits, target, spec, sigma, scale):
    """The straightforward formulas: soft-argmax L1, and log-marginals by logsumexp."""
    d, h, w = spec.heatmap_shape
    n = logits.shape[0]
    logits = logits.float() * scale
    coordinate = (SoftArgmax3D(spec)(logits) - target).abs().mean()
    logp = torch.log_softmax(logits.reshape(n, spec.joints, -1), dim=2).reshape(n, spec.joints, d, h, w)
    logp_xy, logp_z = torch.logsumexp(logp, dim=2), torch.logsumexp(logp.flatten(3), dim=3)
    gx, gy, gz = (_gaussian(target[..., i], size, sigma) for i, size in enumerate((w, h, d)))
    heatmap = (-(gy[..., :, None] * gx[..., None, :] * logp_xy).sum((2, 3)) - (gz * logp_z).sum(2)).mean()
    return coordinate, heatmap


def test_pose_losses_match_the_reference_formulas_and_their_gradients():
    torch.manual_seed(0)
    d, h, w = TINY.heatmap_shape
    logits = (torch.randn(2, TINY.joints * d, h, w) * 2).requires_grad_()
    target = torch.rand(2, TINY.joints, 3) * (w - 1)
    coords = SoftArgmax3D(TINY).coords
    fast = pose_losses(logits, target, coords, TINY, sigma=0.75, scale=5.0)
    ref = _reference_losses(logits, target, TINY, 0.75, 5.0)
    torch.testing.assert_close(fast.coordinate, ref[0])
    torch.testing.assert_close(fast.heatmap, ref[1])
    g_fast = torch.autograd.grad(fast.coordinate + 0.5 * fast.heatmap, logits)[0]
    g_ref = torch.autograd.grad(ref[0] + 0.5 * ref[1], logits)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-7)
