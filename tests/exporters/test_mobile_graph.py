"""The XNNPACK rewrite computes exactly what the original graph computes."""

import onnx
import pytest
import torch

from benchmarks.profile import cut_points
from exporters.converters.mobile_graph import SplitDepthwise7x7, for_xnnpack
from models.folding import fold_batchnorm
from models.network import Block
from models.spec import ModelSpec
from models.synthetic.untrained import synthetic_model


def test_split_depthwise_equals_the_7x7_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 12, 7, padding=3, groups=12)
    split = SplitDepthwise7x7(conv)
    x = torch.randn(2, 12, 17, 23)  # odd sizes: borders and padding must line up
    assert torch.allclose(split(x), conv(x), atol=1e-5)
    # every tap of the 7x7 kernel lands in exactly one of the three pieces
    taps = sum(int((p.weight != 0).sum()) for p in (split.a, split.b, split.c))
    assert taps == int((conv.weight != 0).sum())


def test_split_refuses_other_convs():
    with pytest.raises(ValueError, match="7x7 depthwise"):
        SplitDepthwise7x7(torch.nn.Conv2d(4, 4, 5, padding=2, groups=4))


def test_fold_batchnorm_is_exact():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(6, 6, 7, padding=3, groups=6), torch.nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.normal_(), bn.bias.normal_()
    x = torch.randn(1, 6, 9, 9)
    assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-5)


def test_rewritten_model_matches_and_original_is_untouched():
    spec = ModelSpec("tiny", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                     depth_bins=8, joints=5, input_size=64)
    model = synthetic_model(spec, seed=2)
    mobile, rewrites = for_xnnpack(model)
    assert rewrites and "5 blocks" in rewrites[0]
    assert all(isinstance(b.dwconv, torch.nn.Conv2d) for b in model.modules() if isinstance(b, Block))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(mobile(x), model(x), atol=1e-4)


@pytest.mark.e2e
def test_profile_cuts_the_exported_graph_into_a_chain(xs_export):
    out, _, _ = xs_export
    segments = cut_points(onnx.load(str(out / "convnextpose-XS.sim.onnx")))
    assert [s.name for s in segments][0] == "stem + stage 0" and segments[-1].output == "joints"
    assert segments[0].input == "image"
    for before, after in zip(segments, segments[1:]):
        assert after.input == before.output


def test_the_executorch_soft_argmax_computes_the_same_joints(tiny_spec):
    """mobile_graph.LinearSoftArgmax: sums as products with ones, the maximum as two max-pools: the same function."""
    from exporters.converters.mobile_graph import LinearSoftArgmax
    from models.network import SoftArgmax3D

    tail = SoftArgmax3D(tiny_spec)
    logits = torch.randn(2, tiny_spec.output_channels, tiny_spec.heatmap_size, tiny_spec.heatmap_size) * 4
    torch.testing.assert_close(LinearSoftArgmax(tail)(logits), tail(logits), atol=1e-5, rtol=1e-5)
