"""The network computes what the official code computes."""

import torch

from models.network import build_model


def test_soft_argmax_equals_the_official_formulation(tiny_spec):
    """Official code: softmax over D*H*W, then marginal sums times arange per axis."""
    torch.manual_seed(0)
    model = build_model(tiny_spec)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        heat = model.heatmaps(x)
        d, h, w = model.spec.heatmap_shape
        p = torch.softmax(heat.reshape(3, 5, -1), 2).reshape(3, 5, d, h, w)
        xs = (p.sum(dim=(2, 3)) * torch.arange(w)).sum(2)
        ys = (p.sum(dim=(2, 4)) * torch.arange(h)).sum(2)
        zs = (p.sum(dim=(3, 4)) * torch.arange(d)).sum(2)
        official = torch.stack([xs, ys, zs], dim=2)
        assert torch.allclose(model(x), official, atol=1e-5)


def test_upsampling_is_bilinear_align_corners(tiny_spec):
    model = build_model(tiny_spec)
    up = model.head.deconv_layers_1.upsample
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    # align_corners=True keeps the corner values exactly.
    y = up(x)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0, 0, 0] == 0 and y[0, 0, -1, -1] == 3
    assert isinstance(model.head.deconv_layers_3.upsample, torch.nn.Identity)


def test_coordinate_table_is_not_in_the_state_dict(tiny_spec):
    model = build_model(tiny_spec)
    assert not any("coords" in k for k in model.state_dict())
