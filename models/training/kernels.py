"""Faster CPU training of the ConvNeXt blocks' 7x7 depthwise convolutions; same maths, same weights.

Measured on the 2-core Xeon (XS, 8 images at 256 px, bf16 autocast, channels-last): oneDNN's
depthwise backward is ~10x its forward and took a third of each step; in bf16 it is 2.6x slower
than in fp32. ``fast_depthwise`` runs those convolutions in fp32 with a backward written as
two forward convolutions (below), which cut the whole step by ~25% for XS and S. Only while
training: the model's modules, parameters and state_dict are untouched, and inference code never
sees this.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from models.network import Block


class _DepthwiseConv2d(torch.autograd.Function):
    """Stride-1, 'same'-padded depthwise convolution whose backward is made of forward convolutions.

    grad input  = the same depthwise conv of grad output with the kernel flipped;
    grad weight = per channel, the correlation of input and grad output summed over the batch:
                  one grouped conv with the (N*C) grad-output planes as kernels, then a sum over N.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        p, k = ctx.padding, weight.shape[-1]
        grad_x = F.conv2d(grad, weight.flip(2, 3), None, 1, p, 1, c)
        planes = x.transpose(0, 1).reshape(1, c * n, h, w)
        kernels = grad.transpose(0, 1).reshape(c * n, 1, h, w)
        grad_w = F.conv2d(planes, kernels, None, 1, p, 1, c * n).reshape(c, n, k, k).sum(1, keepdim=True)
        grad_b = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


def _fp32_depthwise_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):  # the weights' dtype (fp32 in training), not bf16
        return _DepthwiseConv2d.apply(x.to(self.weight.dtype), self.weight, self.bias, self.padding[0])


@contextlib.contextmanager
def fast_depthwise(model: nn.Module) -> Iterator[None]:
    """Within the block: every ConvNeXt block's ``dwconv`` runs through ``_DepthwiseConv2d`` in fp32.

    The head's 3x3 depthwise convs keep the standard path (measured: no gain there).
    """
    convs = [m.dwconv for m in model.modules() if isinstance(m, Block)]
    for conv in convs:
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or 2 * conv.padding[0] + 1 != conv.kernel_size[0]:
            raise ValueError(f"fast_depthwise needs stride-1 'same' depthwise convs, got {conv}")
        conv.forward = types.MethodType(_fp32_depthwise_forward, conv)
    try:
        yield
    finally:
        for conv in convs:
            del conv.forward  # back to nn.Conv2d.forward
