"""Op kernels shared by both formats, in float32 torch.

The two formats store parameters differently but compute the same thing; each reader turns its
parameters into the arguments below. Bilinear resizing is written out from Core ML's documented
sampling grids instead of calling F.interpolate, so the evaluator does not inherit PyTorch's
align_corners convention by accident: the tests compare it against F.interpolate independently.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

Pads = tuple[int, int, int, int]  # top, bottom, left, right


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: tuple[int, int], pads: Pads, dilation: tuple[int, int], groups: int,
) -> torch.Tensor:
    top, bottom, left, right = pads
    if any(pads):
        x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, weight, bias, stride=stride, dilation=dilation, groups=groups)


def same_pads(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int], top_left_heavy: bool) -> Pads:
    """Padding that gives ceil(in / stride) outputs; the odd pixel goes bottom/right unless top_left_heavy."""
    pads: list[int] = []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pads += [big, small] if top_left_heavy else [small, big]
    return pads[0], pads[1], pads[2], pads[3]


def batch_norm(x: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, gamma: torch.Tensor | None,
               beta: torch.Tensor | None, epsilon: float, channel_axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[channel_axis] = -1
    scale = torch.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    y = (x - mean.reshape(shape)) * scale.reshape(shape)
    return y + beta.reshape(shape) if beta is not None else y


# ---- bilinear resizing ------------------------------------------------------------------------
# Sampling grids as documented for MIL upsample_bilinear/resize_bilinear and NeuralNetwork
# UpsampleLayerParams/SamplingMode: output index i samples input coordinate grid[i], clamped to [0, n_in - 1].
GRID_MODES = ("align_corners", "align_corners_centred", "default", "half_pixel", "offset_corners")


def sample_grid(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    i = torch.arange(n_out, dtype=torch.float64)
    if mode in ("align_corners", "align_corners_centred"):
        if n_out == 1:
            grid = torch.full((1,), (n_in - 1) / 2 if mode == "align_corners_centred" else 0.0, dtype=torch.float64)
        else:
            grid = i * (n_in - 1) / (n_out - 1)
    elif mode == "default":  # (n_in - n_in/n_out)/(n_out - 1) spacing = i * n_in/n_out: TF's legacy, non-half-pixel
        grid = i * n_in / n_out
    elif mode == "half_pixel":  # PyTorch align_corners=False
        spacing = n_in / n_out
        grid = i * spacing + 0.5 * spacing - 0.5
    elif mode == "offset_corners":
        delta = max(1, n_in - 1) / n_out
        grid = 0.5 * delta + i * delta
    else:
        raise ValueError(f"unknown bilinear sampling mode {mode!r}; expected one of {GRID_MODES}")
    return grid.clamp(0, n_in - 1)


def _lerp_axis(x: torch.Tensor, grid: torch.Tensor, dim: int) -> torch.Tensor:
    n_in = x.shape[dim]
    lo = grid.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    frac = (grid - lo).to(x.dtype).reshape(shape)
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * frac


def resize_bilinear(x: torch.Tensor, out_h: int, out_w: int, mode: str) -> torch.Tensor:
    """Bilinear resize of the last two axes (separable: along H, then along W)."""
    x = _lerp_axis(x, sample_grid(x.shape[-2], out_h, mode), x.dim() - 2)
    return _lerp_axis(x, sample_grid(x.shape[-1], out_w, mode), x.dim() - 1)


# ---- shape and linear algebra ------------------------------------------------------------------
def reshape(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    # 0 copies the input's dimension (MIL iOS17 reshape, NN reshapeStatic never emits it).
    return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


def matmul(x: torch.Tensor, y: torch.Tensor, transpose_x: bool, transpose_y: bool) -> torch.Tensor:
    if transpose_x:
        x = x.transpose(-1, -2)
    if transpose_y:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def reduce(x: torch.Tensor, kind: str, axes: list[int] | None, keep_dims: bool) -> torch.Tensor:
    dims = list(range(x.dim())) if axes is None else [int(a) for a in axes]
    if kind == "sum":
        return x.sum(dim=dims, keepdim=keep_dims)
    if kind == "mean":
        return x.mean(dim=dims, keepdim=keep_dims)
    if kind == "max":
        return x.amax(dim=dims, keepdim=keep_dims)
    raise ValueError(f"unknown reduction {kind!r}")
