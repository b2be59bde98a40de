"""The fp16-accumulation kernels against a straightforward sequential-fp16 reference written here with numpy
scalars (one np.float16 product and one np.float16 addition per term, loops over every output element), and
on inputs built so that fp16 accumulation visibly differs from the default mode's fp32 arithmetic: a checker
of the mode that cannot fail proves nothing. Whole files under the mode: test_coreml_reference.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from runtimes.coreml_reference import fp16_accumulation as fp16
from runtimes.coreml_reference import kernels

H = np.float16

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random(shape: tuple[int, ...], seed: int, low: float = -2.0, high: float = 2.0) -> torch.Tensor:
    values = np.random.default_rng(seed).uniform(low, high, shape)
    return torch.from_numpy(values.astype(np.float16))


def _f16(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.float16, "an fp16-accumulation kernel must hand back fp16"
    return t.numpy()


# ---- the reference: one term at a time, numpy fp16 scalars ----------------------------------------
def ref_dot(pairs) -> np.float16:
    """((w0 x0) + (w1 x1)) + ..., every product and every partial sum rounded to fp16."""
    total = H(0)
    for w, x in pairs:
        total = H(total + H(H(w) * H(x)))
    return total


def ref_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride, pads, dilation, groups) -> np.ndarray:
    top, bottom, left, right = pads
    n, c_in, h, wd = x.shape
    padded = np.zeros((n, c_in, h + top + bottom, wd + left + right), np.float16)
    padded[:, :, top:top + h, left:left + wd] = x
    c_out, c_group, kh, kw = w.shape
    h_out = (padded.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (padded.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c_out, h_out, w_out), np.float16)
    for b_, o, r, s in itertools.product(range(n), range(c_out), range(h_out), range(w_out)):
        g = o // (c_out // groups)
        top_left = (r * stride[0], s * stride[1])
        out[b_, o, r, s] = ref_dot(
            (w[o, c, i, j], padded[b_, g * c_group + c, top_left[0] + i * dilation[0], top_left[1] + j * dilation[1]])
            for c in range(c_group) for i in range(kh) for j in range(kw))
        if b is not None:
            out[b_, o, r, s] = H(out[b_, o, r, s] + b[o])
    return out


def ref_matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x (..., M, K) @ y (K, N)."""
    out = np.zeros((*x.shape[:-1], y.shape[1]), np.float16)
    for index in np.ndindex(out.shape):
        *lead, m, n = index
        out[index] = ref_dot((x[(*lead, m, k)], y[k, n]) for k in range(x.shape[-1]))
    return out


def ref_sum(values) -> np.float16:
    total = H(0)
    for v in values:
        total = H(total + H(v))
    return total


def ref_reduce(x: np.ndarray, axes: list[int], kind: str) -> np.ndarray:
    """Sum (mean: then one fp16 division by the count) over ``axes``, the terms in row-major order."""
    moved = np.moveaxis(x, axes, list(range(len(axes))))
    count = int(np.prod([x.shape[a] for a in axes]))
    flat = moved.reshape(count, -1)
    out = np.array([ref_sum(flat[:, i]) for i in range(flat.shape[1])], np.float16)
    if kind == "mean":
        out = (out / H(count)).astype(np.float16)
    return out.reshape(moved.shape[len(axes):])


def ref_softmax_last(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        exps = np.array([H(np.exp(np.float32(H(v - row.max())))) for v in row], np.float16)
        total = ref_sum(exps)
        out[index] = [H(e / total) for e in exps]
    return out


def ref_bilinear_axis(x: np.ndarray, grid: np.ndarray, axis: int) -> np.ndarray:
    n_in = x.shape[axis]
    moved = np.moveaxis(x, axis, -1)
    out = np.zeros((*moved.shape[:-1], len(grid)), np.float16)
    for k, g in enumerate(grid):
        lo = min(int(np.floor(g)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = np.float32(g - lo)
        w_lo, w_hi = H(np.float32(1) - frac), H(frac)
        for index in np.ndindex(out.shape[:-1]):
            out[(*index, k)] = H(H(moved[(*index, lo)] * w_lo) + H(moved[(*index, hi)] * w_hi))
    return np.moveaxis(out, -1, axis)


# ---- each kernel equals the reference on small random inputs --------------------------------------
CONVS = {  # name: (x shape, weight shape, stride, pads (top, bottom, left, right), dilation, groups, bias)
    "plain_3x3": ((1, 3, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    "pointwise": ((1, 6, 4, 3), (5, 6, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),
    "depthwise_7x7": ((1, 4, 6, 6), (4, 1, 7, 7), (1, 1), (3, 3, 3, 3), (1, 1), 4, True),
    "grouped_dilated": ((1, 4, 7, 7), (6, 2, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2, False),
    "strided_asymmetric": ((2, 3, 8, 7), (4, 3, 4, 4), (4, 4), (0, 1, 1, 0), (1, 1), 1, True),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_sums_term_by_term_in_fp16(case):
    x_shape, w_shape, stride, pads, dilation, groups, has_bias = CONVS[case]
    x, w = _random(x_shape, 0), _random(w_shape, 1)
    b = _random((w_shape[0],), 2) if has_bias else None
    got = fp16.conv2d(x, w, b, stride, pads, dilation, groups)
    expected = ref_conv(x.numpy(), w.numpy(), None if b is None else b.numpy(), stride, pads, dilation, groups)
    np.testing.assert_array_equal(_f16(got), expected)


def test_matmul_and_linear_sum_term_by_term_in_fp16():
    x, y = _random((2, 3, 9), 0), _random((9, 4), 1)
    np.testing.assert_array_equal(_f16(fp16.matmul(x, y)), ref_matmul(x.numpy(), y.numpy()))
    np.testing.assert_array_equal(_f16(fp16.matmul(y, x, True, True)),
                                  ref_matmul(x.numpy(), y.numpy()).transpose(0, 2, 1))
    np.testing.assert_array_equal(_f16(fp16.matmul(x[0, 0], y)), ref_matmul(x.numpy()[0, :1], y.numpy())[0])
    weight, bias = _random((4, 9), 2), _random((4,), 3)
    expected = (ref_matmul(x.numpy(), weight.numpy().T) + bias.numpy()).astype(np.float16)  # one fp16 add
    np.testing.assert_array_equal(_f16(fp16.linear(x, weight, bias)), expected)


@pytest.mark.parametrize(("axes", "kind"), [([3], "sum"), ([1], "sum"), ([2, 3], "sum"), ([1, 3], "mean"),
                                            ([-1], "mean")])
def test_reductions_sum_term_by_term_in_fp16(axes, kind):
    x = _random((2, 3, 4, 5), 0)
    expected = ref_reduce(x.numpy(), [a % 4 for a in axes], kind)
    np.testing.assert_array_equal(_f16(fp16.reduce(x, kind, axes, False)), expected)
    kept = fp16.reduce(x, kind, axes, True)
    assert kept.shape == x.sum(dim=axes, keepdim=True).shape
    np.testing.assert_array_equal(_f16(kept).reshape(expected.shape), expected)


def test_softmax_sums_its_normaliser_term_by_term_in_fp16():
    x = _random((2, 3, 17), 0, -6.0, 6.0)
    np.testing.assert_array_equal(_f16(fp16.softmax(x, -1)), ref_softmax_last(x.numpy()))
    np.testing.assert_array_equal(_f16(fp16.softmax(x.transpose(1, 2), 1)),
                                  ref_softmax_last(x.numpy()).transpose(0, 2, 1))


@pytest.mark.parametrize("mode", ["align_corners", "half_pixel"])
def test_bilinear_is_two_fp16_weighted_sums(mode):
    x = _random((1, 2, 4, 5), 0, 0.0, 100.0)
    got = fp16.resize_bilinear(x, 8, 7, mode)
    along_h = ref_bilinear_axis(x.numpy(), kernels.sample_grid(4, 8, mode).numpy(), 2)
    np.testing.assert_array_equal(_f16(got), ref_bilinear_axis(along_h, kernels.sample_grid(5, 7, mode).numpy(), 3))


def test_batch_norm_rounds_each_step_to_fp16():
    x, mean, gamma, beta = _random((1, 3, 4, 4), 0), _random((3,), 1), _random((3,), 2), _random((3,), 3)
    variance = _random((3,), 4, 0.5, 2.0)
    got = fp16.batch_norm(x, mean, variance, gamma, beta, 1e-5, channel_axis=1)
    scale = (torch.rsqrt(variance.float() + 1e-5) * gamma.float()).half().numpy()  # the folded constant
    c = (slice(None), None, None)
    expected = ((x.numpy() - mean.numpy()[c]) * scale[c] + beta.numpy()[c])  # numpy fp16 rounds every step
    np.testing.assert_array_equal(_f16(got), expected.astype(np.float16))


# ---- and differs from fp32 accumulation where fp16 accumulation stagnates -------------------------
# An fp16 running sum of ones stops at 2048 (2048 + 1 rounds back to 2048); fp32 gets 4096.
ONES = 4096


def test_a_long_conv_sum_stagnates_in_fp16():
    x, w = torch.ones(1, ONES, 2, 2, dtype=torch.float16), torch.ones(2, ONES, 1, 1, dtype=torch.float16)
    args = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
    got = fp16.conv2d(x, w, None, *args)
    assert (got == 2048).all()
    assert (kernels.conv2d(x.float(), w.float(), None, *args).half() == ONES).all()
    np.testing.assert_array_equal(_f16(got), ref_conv(x.numpy(), w.numpy(), None, *args))
    plane = torch.ones(1, 2, 64, 64, dtype=torch.float16)  # a depthwise 64 x 64 kernel: 4096 taps
    depthwise = fp16.conv2d(plane, plane.reshape(2, 1, 64, 64), None, (1, 1), (0, 0, 0, 0), (1, 1), 2)
    assert (depthwise == 2048).all()


def test_long_matmul_linear_and_reductions_stagnate_in_fp16():
    row, column = torch.ones(1, ONES, dtype=torch.float16), torch.ones(ONES, 1, dtype=torch.float16)
    assert fp16.matmul(row, column).item() == 2048 and kernels.matmul(row.float(), column.float(), False, False) == ONES
    assert fp16.linear(row, row).item() == 2048
    x = torch.ones(2, 64, 64, dtype=torch.float16)
    assert (fp16.reduce(x, "sum", [1, 2], False) == 2048).all()
    assert (fp16.reduce(x, "mean", [1, 2], False) == 0.5).all()
    assert (kernels.reduce(x.float(), "mean", [1, 2], False) == 1).all()
    assert fp16.reduce(x, "max", [1, 2], False).eq(1).all()  # a maximum has no sum to stagnate


def test_a_long_softmax_normaliser_stagnates_in_fp16():
    """4096 equal logits: each probability 1/4096 in fp32; the fp16 normaliser stops at 2048, doubling them --
    the old soft-argmax's failure (its softmax ran over 32,768 voxels)."""
    x = torch.zeros(1, ONES, dtype=torch.float16)
    assert (fp16.softmax(x, -1) == H(1 / 2048)).all()
    assert (torch.softmax(x.float(), -1).half() == H(1 / ONES)).all()


def test_fp16_weighted_sums_differ_from_one_rounding():
    """Bilinear and batch norm have no long sums, but each fp16 step rounds: on values near 1000 (fp16 ulp 0.5)
    the fp16 steps differ from the default mode's fp32 arithmetic rounded once."""
    x = _random((1, 2, 6, 6), 0, 1000.0, 1020.0)
    default = kernels.resize_bilinear(x.float(), 11, 11, "align_corners").half()
    assert (fp16.resize_bilinear(x, 11, 11, "align_corners") != default).any()
    mean, variance = torch.full((2,), 3.3, dtype=torch.float16), torch.full((2,), 0.7, dtype=torch.float16)
    gamma, beta = torch.full((2,), 1.1, dtype=torch.float16), torch.full((2,), 0.3, dtype=torch.float16)
    default = kernels.batch_norm(x.float(), mean.float(), variance.float(), gamma.float(), beta.float(), 1e-5, 1)
    assert (fp16.batch_norm(x, mean, variance, gamma, beta, 1e-5, 1) != default.half()).any()


def test_the_cost_is_one_vectorised_step_per_term():
    """A pointwise conv of 160 -> 40 channels on 64 x 64 positions (XS's first stage): 160 fp16 steps over the
    whole output, not a Python loop over elements: 0.02-0.04 s on one thread of this shared machine (torch's
    2-thread pool took 1.5 s once while the other core was busy); a loop over its 26 M products takes minutes."""
    import time

    x, w = _random((1, 160, 64, 64), 0), _random((40, 160, 1, 1), 1, -0.1, 0.1)
    start = time.perf_counter()
    got = fp16.conv2d(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert time.perf_counter() - start < 10.0
    exact = kernels.conv2d(x.float(), w.float(), None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert 0 < (got.float() - exact).abs().max() < 0.05  # fp16 sums of 160 small terms: close, not equal
