"""Graph rewrites for the TFLite path: same function, kernels XNNPACK runs fast.

Measured here (ai-edge-litert 2.3.0, XNNPACK, 1 thread, one 64x64x40 tensor): a 7x7 depthwise
convolution takes 10.7 ms, a 5x5 one 0.24 ms -- XNNPACK has no fast kernel for 49 taps, and the
7x7 depthwise convolutions of the ConvNeXt blocks were most of TFLite's latency. Every 7x7
depthwise conv is therefore split into three with at most 25 taps each, whose sum is exactly
the 7x7 kernel (0.77 ms for the same tensor):

    A: 5x5,                      taps |dy| <= 2, |dx| <= 2
    B: 3x7, dilation (3, 1)      taps dy in {-3, 0, 3}: rows +-3 whole, row 0 only at dx = +-3
    C: 5x3, dilation (1, 3)      taps dx in {-3, 0, 3}: columns +-3 for dy in {+-1, +-2}

ONNX and Core ML keep the single 7x7 convolution, which their runtimes handle well.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.network import Block, ConvNeXtPose

_K = 7  # the kernel this rewrite is for
SPLIT_DEPTHWISE_7X7 = "7x7 depthwise conv -> 5x5 + dilated 3x7 + dilated 5x3 depthwise convs (XNNPACK speed)"


class SplitDepthwise7x7(nn.Module):
    """A 7x7 depthwise Conv2d (padding 3) as the sum of three depthwise convs of <= 25 taps."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        c = conv.in_channels
        if not (conv.kernel_size == (_K, _K) and conv.groups == c == conv.out_channels and conv.padding == (3, 3)
                and conv.stride == (1, 1) and conv.dilation == (1, 1)):
            raise ValueError(f"expected a 7x7 depthwise conv with padding 3, got {conv}")
        self.a = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.b = nn.Conv2d(c, c, (3, 7), padding=3, dilation=(3, 1), groups=c, bias=False)
        self.c = nn.Conv2d(c, c, (5, 3), padding=(2, 3), dilation=(1, 3), groups=c, bias=False)
        w = conv.weight.detach()  # (C, 1, 7, 7), index [dy + 3, dx + 3]
        with torch.no_grad():
            self.a.weight.copy_(w[:, :, 1:6, 1:6])
            self.a.bias.copy_(conv.bias.detach())
            b = w[:, :, [0, 3, 6], :].clone()
            b[:, :, 1, 1:6] = 0  # row 0, |dx| <= 2 belongs to A
            self.b.weight.copy_(b)
            cw = w[:, :, 1:6, :][:, :, :, [0, 3, 6]].clone()
            cw[:, :, :, 1] = 0  # column 0 belongs to A
            cw[:, :, 2, :] = 0  # row 0 belongs to B
            self.c.weight.copy_(cw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x) + self.c(x)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode bn, as one conv (exporters fold this pair themselves, but not
    once the conv is split into a sum, so it is folded before splitting)."""
    fused = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        fused.weight.mul_(scale.view(-1, 1, 1, 1))
        fused.bias.copy_((conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach())
    return fused


def for_xnnpack(model: ConvNeXtPose) -> tuple[ConvNeXtPose, list[str]]:
    """A copy with every block's 7x7 depthwise conv (+ its BatchNorm) split; returns the rewrites applied."""
    mobile = copy.deepcopy(model).eval()
    blocks = [m for m in mobile.modules() if isinstance(m, Block)]
    for block in blocks:
        block.dwconv = SplitDepthwise7x7(fold_batchnorm(block.dwconv, block.norm))
        block.norm = nn.Identity()
    return mobile, [f"{SPLIT_DEPTHWISE_7X7}: {len(blocks)} blocks"] if blocks else []
