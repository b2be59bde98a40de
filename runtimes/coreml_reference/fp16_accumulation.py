"""Kernels of the fp16-accumulation mode: every sum accumulated in fp16, one term at a time.

The default evaluator computes inside an op in fp32 and rounds the op's result to fp16 (Core ML's CPU
path). A phone's GPU or Neural Engine may instead keep the running sum of a convolution, a matmul or a
reduction in fp16. The worst order a device can take is the sequential one: every product rounded to
fp16, then added to the running sum, which is rounded to fp16 after every addition. Once the sum is
large, terms below half its ulp are lost (an fp16 sum of ones stops at 2048), so a long sum of small
terms -- a softmax normaliser over 32,768 voxels -- is where the pose is lost.

Every kernel here takes its tensors in fp16 and returns fp16. The terms of a sum are taken in the order
the reduction index is stored: a convolution's input channel, then kernel row, then kernel column (the
weight's layout), a matmul's inner index, a reduction's axes in row-major order. A bias is added after
the sum. Elementwise arithmetic needs nothing here: torch's fp16 ops on the CPU compute in fp32 and round
once, which for +, -, x, / is the correctly rounded fp16 result (fp32 has 24 >= 2 x 11 + 2 bits, so the
double rounding is innocuous) -- the same as the default mode's rounding of an op's output.

Cost: a sum of K terms is K fp16 multiply-adds over the whole output slice at once (torch float16 on the
CPU, ~0.3 ns an element on this machine), never a Python loop over elements. Figures: package docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from runtimes.coreml_reference.kernels import Pads, sample_grid

HALF = torch.float16


def half(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp16 (exact for the fp16 values an fp16 program holds)."""
    return t if t.dtype == HALF else t.to(HALF)


def sequential_sum(x: torch.Tensor, dims: Sequence[int] | None = None, keepdim: bool = False) -> torch.Tensor:
    """Sum over ``dims`` (all when None): ((x0 + x1) + x2) + ..., rounded to fp16 after every addition; the
    terms in row-major order over the summed axes."""
    x = half(x)
    rank = x.dim()
    axes = sorted({d % rank for d in dims}) if dims is not None else list(range(rank))
    kept = [d for d in range(rank) if d not in axes]
    terms = x.permute(*axes, *kept).reshape(-1, *[x.shape[d] for d in kept])
    total = terms[0].clone()
    for k in range(1, terms.shape[0]):
        total.add_(terms[k])
    if keepdim:
        total = total.reshape([1 if d in axes else x.shape[d] for d in range(rank)])
    return total


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int], pads: Pads,
           dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """A 2-D convolution of any kind (grouped, depthwise, dilated, strided) as C_in/groups x kh x kw steps, each
    adding (product of one weight and one shifted input window) to the (N, C_out, H_out, W_out) running sum."""
    x, weight = half(x), half(weight)
    top, bottom, left, right = pads
    if any(pads):
        x = F.pad(x, (left, right, top, bottom))
    n, c_in, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    h_out, w_out = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    if c_in != c_group * groups or c_out % groups or h_out < 1 or w_out < 1:
        raise ValueError(f"conv of input {tuple(x.shape)} (padded) with weight {tuple(weight.shape)}, "
                         f"{groups} groups: shapes do not fit")
    xg = x.reshape(n, groups, 1, c_group, h, w)  # the 1: a weight broadcasts over its group's output channels
    wg = weight.reshape(1, groups, c_out // groups, c_group, kh, kw)
    total = torch.zeros(n, groups, c_out // groups, h_out, w_out, dtype=HALF)
    product = torch.empty_like(total)
    for c in range(c_group):
        for i in range(kh):
            rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
            for j in range(kw):
                window = xg[:, :, :, c, rows, j * dw: j * dw + sw * (w_out - 1) + 1: sw]
                torch.mul(wg[:, :, :, c, i, j, None, None], window, out=product)
                total.add_(product)
    total = total.reshape(n, c_out, h_out, w_out)
    return total + half(bias).reshape(1, -1, 1, 1) if bias is not None else total


def matmul(x: torch.Tensor, y: torch.Tensor, transpose_x: bool = False, transpose_y: bool = False) -> torch.Tensor:
    """x @ y (torch.matmul's broadcasting, rank 1 included) with the inner index summed in sequence."""
    x, y = half(x), half(y)
    if transpose_x:
        x = x.transpose(-1, -2)
    if transpose_y:
        y = y.transpose(-1, -2)
    vector_x, vector_y = x.dim() == 1, y.dim() == 1
    x = x.unsqueeze(0) if vector_x else x
    y = y.unsqueeze(-1) if vector_y else y
    if x.shape[-1] != y.shape[-2]:
        raise ValueError(f"matmul of {tuple(x.shape)} and {tuple(y.shape)}: inner sizes differ")
    total = x[..., :, 0:1] * y[..., 0:1, :]
    for k in range(1, x.shape[-1]):
        total.add_(x[..., :, k:k + 1] * y[..., k:k + 1, :])
    if vector_y:
        total = total.squeeze(-1)
    return total.squeeze(-2) if vector_x else total


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias (weight (out, in), as torch.nn.Linear), the input index summed in sequence."""
    total = matmul(x, weight, transpose_y=True)
    return total + half(bias) if bias is not None else total


def reduce(x: torch.Tensor, kind: str, axes: list[int] | None, keep_dims: bool) -> torch.Tensor:
    """reduce_sum / reduce_mean (the sum in sequence, then one fp16 division) / reduce_max (exact in any order)."""
    x = half(x)
    dims = list(range(x.dim())) if axes is None else [int(a) for a in axes]
    if kind == "max":
        return x.amax(dim=dims, keepdim=keep_dims)
    if kind not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {kind!r}")
    total = sequential_sum(x, dims, keep_dims)
    return total / math.prod(x.shape[d] for d in dims) if kind == "mean" else total


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(x - max) / sum: the shift, exponential and division rounded to fp16, the normaliser summed in sequence."""
    x = half(x)
    exps = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return exps / sequential_sum(exps, [dim], keepdim=True)


def batch_norm(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, gamma: torch.Tensor | None,
               beta: torch.Tensor | None, epsilon: float, channel_axis: int) -> torch.Tensor:
    """(x - mean) x scale + beta, each step rounded to fp16; the per-channel scale gamma / sqrt(variance +
    epsilon) is a constant a compiler folds (computed in fp32, rounded once)."""
    shape = [1] * x.dim()
    shape[channel_axis] = -1
    scale = torch.rsqrt(variance.float() + epsilon)
    if gamma is not None:
        scale = scale * gamma.float()
    y = (half(x) - half(mean).reshape(shape)) * half(scale).reshape(shape)
    return y + half(beta).reshape(shape) if beta is not None else y


def _weighted_axis(x: torch.Tensor, grid: torch.Tensor, dim: int) -> torch.Tensor:
    """Each output = w_lo x lo + w_hi x hi along ``dim``: two fp16 products and one fp16 addition, the weights
    (1 - frac, frac) rounded to fp16."""
    n_in = x.shape[dim]
    lo = grid.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    frac = (grid - lo).float()
    w_lo, w_hi = half(1 - frac).reshape(shape), half(frac).reshape(shape)
    return x.index_select(dim, lo) * w_lo + x.index_select(dim, hi) * w_hi


def resize_bilinear(x: torch.Tensor, out_h: int, out_w: int, mode: str) -> torch.Tensor:
    """Bilinear resize of the last two axes as fp16 weighted sums, along H then along W (fp16 in between)."""
    x = half(x)
    x = _weighted_axis(x, sample_grid(x.shape[-2], out_h, mode), x.dim() - 2)
    return _weighted_axis(x, sample_grid(x.shape[-1], out_w, mode), x.dim() - 1)
