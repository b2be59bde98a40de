"""`convnextpose kernels` times the network's own convolutions, and each library's graph computes them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from benchmarks.kernels import (
    X_SCALE,
    X_ZERO,
    Y_SCALE,
    Y_ZERO,
    ConvShape,
    block_convolutions,
    ort_model,
    tflite_fp32,
    tflite_int8,
    weights,
)
from models.network import Block, ConvNeXtPose
from models.spec import spec_for
from runtimes.litert import SIGNATURE_KEY, delegated_nodes, interpreter
from runtimes.onnxrt import inference_session


def test_block_convolutions_are_the_networks_own():
    """Shapes and counts from the spec against the convolutions a forward pass of the built network runs."""
    spec = spec_for("XS")
    model = ConvNeXtPose(spec).eval()
    seen: Counter = Counter()

    def hook(conv, inputs, _output):
        seen[(inputs[0].shape[-1], conv.in_channels, conv.out_channels, conv.kernel_size[0])] += 1

    for block in (m for m in model.modules() if isinstance(m, Block)):
        for conv in (block.dwconv, block.pwconv1, block.pwconv2):
            conv.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, spec.input_size, spec.input_size))
    listed = Counter()
    for s in block_convolutions(spec):
        listed[(s.hw, s.cin, s.cout, s.kernel)] += s.count
    assert listed == seen


def _reference(shape: ConvShape, w: np.ndarray, x_nhwc: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)
    if shape.depthwise:
        y = torch.nn.functional.conv2d(x, torch.from_numpy(w).permute(2, 3, 0, 1), padding=shape.kernel // 2,
                                       groups=shape.cin)
    else:
        y = torch.nn.functional.conv2d(x, torch.from_numpy(w).permute(3, 2, 0, 1))
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("shape", [ConvShape("1x1", 12, 8, 32, 1, 1), ConvShape("7x7 depthwise", 13, 8, 8, 7, 1)],
                         ids=lambda s: s.name)
def test_each_librarys_kernel_graph_computes_the_convolution(shape):
    """A timed graph that computed something else would time the wrong thing: TFLite fp32 (the depthwise as
    the export splits it) and ORT fp32 exactly, the integer graphs within their quantisation steps."""
    rng = np.random.default_rng(3)
    w = weights(shape, rng)
    x = rng.normal(0, 0.5, (1, shape.hw, shape.hw, shape.cin)).astype(np.float32)
    expected = _reference(shape, w, x)

    fp32 = tflite_fp32(shape, w)
    run = interpreter(fp32).get_signature_runner(SIGNATURE_KEY)
    np.testing.assert_allclose(next(iter(run(image=x).values())), expected, atol=1e-4)
    ort = inference_session(ort_model(shape, w, integer=False), threads=1)
    np.testing.assert_allclose(ort.run(None, {"x": x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1), expected,
                               atol=1e-4)

    int8 = tflite_int8(fp32, shape, rng)
    assert delegated_nodes(int8)[0] == 1  # one XNNPACK partition: the int8 kernels are the ones timed
    it = interpreter(int8)
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    it.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
    it.invoke()
    y = (it.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    assert np.abs(y - expected).max() < 0.05 * np.abs(expected).max()

    q = inference_session(ort_model(shape, w, integer=True), threads=1)
    xq = np.clip(np.round(x / X_SCALE) + X_ZERO, 0, 255).astype(np.uint8)
    yq = (q.run(None, {"x": xq})[0].astype(np.float32) - Y_ZERO) * Y_SCALE
    assert np.abs(yq - expected).max() < 0.05 * np.abs(expected).max()
