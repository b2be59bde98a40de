"""Graph rewrites for the TFLite path: same function, kernels XNNPACK runs fast.

Measured here (ai-edge-litert 2.3.0, XNNPACK, 1 thread, one 64x64x40 tensor): a 7x7 depthwise
convolution takes 10.7 ms, a 5x5 one 0.24 ms -- XNNPACK has no fast kernel for 49 taps, and the
7x7 depthwise convolutions of the ConvNeXt blocks were most of TFLite's latency. Its depthwise
kernels come in 9- and 25-tap tiles (`convnextpose kernels`: on 64x64x48, 1x7 and 3x3 cost the same
23 us, 15-, 21- and 25-tap kernels the same 60 us, fp32 or int8). Every 7x7 depthwise conv is therefore
split into three whose taps are exactly the 49 of the 7x7 kernel, no tap twice, in 25 + 25 + 9 tiles:

    A: 4x5, dilation (2, 1)   rows dy in {-3, -1, 1, 3}, columns |dx| <= 2     20 taps
    B: 3x7, dilation (2, 1)   rows dy in {-2, 0, 2},     every column           21 taps
    C: 4x2, dilation (2, 6)   rows dy in {-3, -1, 1, 3}, columns dx = +-3        8 taps

(on 64x64x48, 2 threads: 172 us int8 / 195 us fp32 with the two ADDs, against 199 / 232 us for the
earlier 5x5 + 3x7 + 5x3 split, whose 61 taps filled three 25-tap tiles).

ONNX and Core ML keep the single 7x7 convolution, which their runtimes handle well.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from models.folding import fold_batchnorm
from models.network import Block, ConvNeXtPose, SoftArgmax3D

_K = 7  # the kernel this rewrite is for
SPLIT_DEPTHWISE_7X7 = ("7x7 depthwise conv -> dilated 4x5 + 3x7 + 4x2 depthwise convs, the 49 taps in XNNPACK's "
                       "25 + 25 + 9-tap kernels")


class SplitDepthwise7x7(nn.Module):
    """A 7x7 depthwise Conv2d (padding 3) as the sum of three depthwise convs over disjoint taps."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        c = conv.in_channels
        if not (conv.kernel_size == (_K, _K) and conv.groups == c == conv.out_channels and conv.padding == (3, 3)
                and conv.stride == (1, 1) and conv.dilation == (1, 1)):
            raise ValueError(f"expected a 7x7 depthwise conv with padding 3, got {conv}")
        odd, even = [0, 2, 4, 6], [1, 3, 5]  # kernel rows of dy = -3, -1, 1, 3 and dy = -2, 0, 2
        self.a = nn.Conv2d(c, c, (4, 5), padding=(3, 2), dilation=(2, 1), groups=c)
        self.b = nn.Conv2d(c, c, (3, 7), padding=(2, 3), dilation=(2, 1), groups=c, bias=False)
        self.c = nn.Conv2d(c, c, (4, 2), padding=(3, 3), dilation=(2, 6), groups=c, bias=False)
        w = conv.weight.detach()  # (C, 1, 7, 7), index [dy + 3, dx + 3]
        with torch.no_grad():
            self.a.weight.copy_(w[:, :, odd, 1:6])
            self.a.bias.copy_(conv.bias.detach())
            self.b.weight.copy_(w[:, :, even, :])
            self.c.weight.copy_(w[:, :, odd, :][:, :, :, [0, 6]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x) + self.c(x)


def for_xnnpack(model: ConvNeXtPose) -> tuple[ConvNeXtPose, list[str]]:
    """A copy with every block's 7x7 depthwise conv (+ its BatchNorm, unless already folded) split; returns
    the rewrites applied."""
    mobile = copy.deepcopy(model).eval()
    blocks = [m for m in mobile.modules() if isinstance(m, Block)]
    for block in blocks:
        conv = fold_batchnorm(block.dwconv, block.norm) if isinstance(block.norm, nn.BatchNorm2d) else block.dwconv
        block.dwconv, block.norm = SplitDepthwise7x7(conv), nn.Identity()
    return mobile, [f"{SPLIT_DEPTHWISE_7X7}: {len(blocks)} blocks"] if blocks else []


#: The soft-argmax as ExecuTorch's XNNPACK partitioner takes it (executorch 1.5.1 delegates neither aten.amax nor
#: aten.sum.dim_IntList: they split the program into 5 delegated subgraphs with the reductions in portable
#: kernels between them). The same sums as products with constant vectors of ones (linear), the maximum as two
#: max-pools: one delegated subgraph, the same function (tests/exporters/test_mobile_graph.py).
LINEAR_TAIL = "soft-argmax sums as linear products with ones, its maximum as max-pools (ExecuTorch's XNNPACK delegate)"


class LinearSoftArgmax(nn.Module):
    """models.network.SoftArgmax3D with every sum a ``linear`` with ones and the maximum two max-pools."""

    def __init__(self, tail: SoftArgmax3D) -> None:
        super().__init__()
        self.joints, self.heatmap_shape = tail.joints, tail.heatmap_shape
        d, h, w = tail.heatmap_shape
        for name, n in (("ones_w", w), ("ones_h", h), ("ones_d", d)):
            self.register_buffer(name, torch.ones(1, n), persistent=False)
        for k, name in enumerate(("index_x", "index_y", "index_z")):
            self.register_buffer(name, getattr(tail, name)[None].clone(), persistent=False)
            self.register_buffer(f"unit_{name[-1]}", torch.eye(3)[k], persistent=False)  # where it lands in (x, y, z)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        d, h, w = self.heatmap_shape
        n, j = heatmaps.shape[0], self.joints
        peak = F.max_pool2d(F.max_pool2d(heatmaps, (h, w)).reshape(n, j, d, 1), (d, 1))  # (N, J, 1, 1)
        mass = torch.exp(heatmaps.reshape(n, j, d, h * w) - peak).reshape(n, j * d, h, w)
        over_w = F.linear(mass, self.ones_w).reshape(n, j * d, h)
        over_h = F.linear(mass.transpose(2, 3), self.ones_h).reshape(n, j * d, w)
        marginal_y = F.linear(over_w.reshape(n, j, d, h).transpose(2, 3), self.ones_d).reshape(n, j, h)
        marginal_x = F.linear(over_h.reshape(n, j, d, w).transpose(2, 3), self.ones_d).reshape(n, j, w)
        marginal_z = F.linear(over_w, self.ones_h).reshape(n, j, d)
        total = F.linear(marginal_z, self.ones_d)  # (N, J, 1)
        # dividing last (unlike SoftArgmax3D) is safe here: ExecuTorch's XNNPACK programs compute in fp32.
        # the three coordinates put in place by products with unit vectors, not a cat: the PT2E quantizer annotates
        # a cat's inputs whatever its filter, and int8 coordinate sums before the division cost 6.4 px (XS, measured)
        return (F.linear(marginal_x, self.index_x) * self.unit_x + F.linear(marginal_y, self.index_y) * self.unit_y
                + F.linear(marginal_z, self.index_z) * self.unit_z) / total


def for_executorch(model: ConvNeXtPose) -> tuple[ConvNeXtPose, list[str]]:
    """``for_xnnpack`` and the soft-argmax as ExecuTorch's XNNPACK delegate takes it (LinearSoftArgmax)."""
    mobile, rewrites = for_xnnpack(model)
    mobile.soft_argmax = LinearSoftArgmax(mobile.soft_argmax)
    return mobile, [*rewrites, LINEAR_TAIL]
