"""The exact folds the exporters apply: the folded network computes what the original computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.folding import batchnorm_as_conv, fold_batchnorm_into_next, fold_normalization, without_batchnorm
from models.network import ConvNeXtPose


def _random_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.05)
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_network_without_batchnorm_computes_the_same(tiny_spec, seed):
    torch.manual_seed(seed)
    model = _random_batchnorm(fold_normalization(ConvNeXtPose(tiny_spec)), seed)
    folded = without_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the fold copies, never edits in place"
    x = torch.rand(3, 3, tiny_spec.input_size, tiny_spec.input_size)
    with torch.no_grad():
        want, got = model.heatmaps(x), folded.heatmaps(x)
    scale = want.abs().max()
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * float(scale)), float((got - want).abs().max() / scale)
    assert set(dict(folded.named_modules())) >= {"backbone.norm", "head.deconv_layers_1.dwconv"}


def test_batchnorm_before_an_unpadded_conv_folds_into_it():
    bn = _random_batchnorm(nn.BatchNorm2d(6), 3)
    conv = nn.Conv2d(6, 5, 2, stride=2)
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm_into_next(bn, conv)(x), conv(bn(x)), atol=1e-5)
        assert torch.allclose(batchnorm_as_conv(bn)(x), bn(x), atol=1e-5)


def test_a_padded_conv_does_not_take_the_batchnorm_before_it():
    # its padding zeros would not be shifted: refusing is the only exact answer
    with pytest.raises(ValueError, match="unpadded"):
        fold_batchnorm_into_next(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1))
