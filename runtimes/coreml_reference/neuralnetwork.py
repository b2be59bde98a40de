"""NeuralNetwork (.mlmodel) reader: the layer list in spec.neuralNetwork, weights inline in the spec.

The format declares no compute precision; Core ML runs it in fp32 on the CPU, so it is evaluated
in fp32 (fp16-stored weights are widened, as Core ML does when it loads them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from common.errors import ExportError
from runtimes.coreml_reference import kernels
from runtimes.coreml_reference.graph import COLOR_SPACES, Graph, Kernel, Node, UnsupportedOpError, image_input

# Enum values of NeuralNetwork.proto, written out so importing this module does not import coremltools.
_BILINEAR = 1  # UpsampleLayerParams.InterpolationMode
_LINEAR_UPSAMPLE_MODES = {0: "default", 1: "align_corners", 2: "half_pixel"}  # DEFAULT, ALIGN_CORNERS_TRUE/FALSE
_SAMPLING_METHODS = {0: "align_corners", 1: "align_corners_centred", 2: "default", 3: "offset_corners"}
_TOP_LEFT_HEAVY = 1  # SamePadding.SamePaddingMode


def _weights(params: Any, shape: tuple[int, ...], layer: Any, what: str) -> torch.Tensor:
    if len(params.floatValue):
        array = np.asarray(params.floatValue, dtype=np.float32)
    elif params.float16Value:
        array = np.frombuffer(params.float16Value, dtype=np.float16).astype(np.float32)
    elif params.rawValue or params.int8RawValue or params.HasField("quantization"):
        raise UnsupportedOpError(layer.WhichOneof("layer"), layer.name, f"quantized {what}")
    else:
        raise ExportError(f"layer {layer.name!r}: {what} has no values")
    if array.size != int(np.prod(shape)):
        raise ExportError(f"layer {layer.name!r}: {what} holds {array.size} values, expected shape {shape}")
    return torch.from_numpy(array.reshape(shape))


NN_LAYERS: dict[str, Callable[[Any, Any], Kernel]] = {}


def _reads(*kinds: str) -> Callable[[Callable[[Any, Any], Kernel]], Callable[[Any, Any], Kernel]]:
    def register(reader: Callable[[Any, Any], Kernel]) -> Callable[[Any, Any], Kernel]:
        for kind in kinds:
            NN_LAYERS[kind] = reader
        return reader
    return register


def _unsupported(layer: Any, detail: str) -> UnsupportedOpError:
    return UnsupportedOpError(layer.WhichOneof("layer"), layer.name, detail)


@_reads("convolution")
def _convolution(layer: Any, p: Any) -> Kernel:
    if p.isDeconvolution:
        raise _unsupported(layer, "deconvolution")
    if len(layer.input) != 1:
        raise _unsupported(layer, "weights given as a second input")
    kernel = tuple(p.kernelSize) or (3, 3)
    stride = tuple(p.stride) or (1, 1)
    dilation = tuple(p.dilationFactor) or (1, 1)
    groups = p.nGroups or 1
    weight = _weights(p.weights, (p.outputChannels, p.kernelChannels, *kernel), layer, "weights")
    bias = _weights(p.bias, (p.outputChannels,), layer, "bias") if p.hasBias else None
    padding = p.WhichOneof("ConvolutionPaddingType")
    if padding == "valid":
        amounts = list(p.valid.paddingAmounts.borderAmounts)
        pads = (amounts[0].startEdgeSize, amounts[0].endEdgeSize, amounts[1].startEdgeSize,
                amounts[1].endEdgeSize) if amounts else (0, 0, 0, 0)
        return lambda x: kernels.conv2d(x, weight, bias, stride, pads, dilation, groups)
    if padding == "same":
        top_left = p.same.asymmetryMode == _TOP_LEFT_HEAVY
        return lambda x: kernels.conv2d(
            x, weight, bias, stride, kernels.same_pads(tuple(x.shape[-2:]), kernel, stride, dilation, top_left),
            dilation, groups)
    raise _unsupported(layer, f"padding {padding!r}")


@_reads("batchnorm")
def _batchnorm(layer: Any, p: Any) -> Kernel:
    if p.computeMeanVar or p.instanceNormalization:
        raise _unsupported(layer, "statistics computed at run time")
    c = (p.channels,)
    gamma, beta = _weights(p.gamma, c, layer, "gamma"), _weights(p.beta, c, layer, "beta")
    mean, variance = _weights(p.mean, c, layer, "mean"), _weights(p.variance, c, layer, "variance")
    epsilon = p.epsilon
    # NN layers address channels as axis -3 whatever the rank.
    return lambda x: kernels.batch_norm(x, mean, variance, gamma, beta, epsilon, channel_axis=x.dim() - 3)


@_reads("activation")
def _activation(layer: Any, p: Any) -> Kernel:
    kind = p.WhichOneof("NonlinearityType")
    functions = {"ReLU": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
    if kind == "linear":  # alpha * x + beta: how the converter writes x * a + b with scalars
        alpha, beta = p.linear.alpha, p.linear.beta
        return lambda x: x * alpha + beta
    if kind not in functions:
        raise UnsupportedOpError(f"activation.{kind}", layer.name)
    return functions[kind]


@_reads("add", "multiply")
def _add_multiply(layer: Any, p: Any) -> Kernel:
    alpha = p.alpha
    if layer.WhichOneof("layer") == "add":
        return lambda *xs: xs[0] + alpha if len(xs) == 1 else _fold(torch.add, xs)
    return lambda *xs: xs[0] * alpha if len(xs) == 1 else _fold(torch.mul, xs)


def _fold(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out


@_reads("multiplyBroadcastable", "divideBroadcastable", "subtractBroadcastable", "addBroadcastable")
def _broadcastable(layer: Any, p: Any) -> Kernel:
    return {"multiplyBroadcastable": torch.mul, "divideBroadcastable": torch.div, "subtractBroadcastable": torch.sub,
            "addBroadcastable": torch.add}[layer.WhichOneof("layer")]


@_reads("unary")
def _unary(layer: Any, p: Any) -> Kernel:
    """UnaryFunctionLayerParams: f(scale * x + shift) with alpha / epsilon where the function takes them; the
    soft-argmax's exponential is the one this project's files hold."""
    kind = type(p).Operation.Name(p.type)
    scale, shift = (p.scale or 1.0), p.shift  # an unset scale (0) means 1, as Core ML reads it
    if kind != "EXP":
        raise _unsupported(layer, f"unary function {kind}")
    return lambda x: torch.exp(x * scale + shift)


@_reads("upsample")
def _upsample(layer: Any, p: Any) -> Kernel:
    if p.mode != _BILINEAR:
        raise _unsupported(layer, "nearest-neighbour upsampling")
    scale = tuple(p.fractionalScalingFactor) or tuple(float(s) for s in p.scalingFactor) or (1.0, 1.0)
    mode = _LINEAR_UPSAMPLE_MODES[p.linearUpsampleMode]
    return lambda x: kernels.resize_bilinear(x, int(x.shape[-2] * scale[0]), int(x.shape[-1] * scale[1]), mode)


@_reads("resizeBilinear")
def _resize_bilinear(layer: Any, p: Any) -> Kernel:
    out_h, out_w = tuple(p.targetSize) or (1, 1)
    mode = _SAMPLING_METHODS[p.mode.samplingMethod]
    return lambda x: kernels.resize_bilinear(x, out_h, out_w, mode)


@_reads("reshapeStatic")
def _reshape_static(layer: Any, p: Any) -> Kernel:
    shape = [int(s) for s in p.targetShape]
    return lambda x: kernels.reshape(x, shape)


@_reads("transpose")
def _transpose(layer: Any, p: Any) -> Kernel:
    axes = [int(a) for a in p.axes]
    return lambda x: x.permute(axes)


@_reads("expandDims")
def _expand_dims(layer: Any, p: Any) -> Kernel:
    axes = [int(a) for a in p.axes]

    def expand_dims(x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() + len(axes)
        for axis in sorted(a % rank for a in axes):  # axes index the output
            x = x.unsqueeze(axis)
        return x

    return expand_dims


@_reads("squeeze")
def _squeeze(layer: Any, p: Any) -> Kernel:
    axes = None if p.squeezeAll else tuple(int(a) for a in p.axes)
    return lambda x: x.squeeze() if axes is None else x.squeeze(axes)


@_reads("softmaxND", "softmax")
def _softmax(layer: Any, p: Any) -> Kernel:
    if layer.WhichOneof("layer") == "softmax":  # the rank-5-era layer: always the channel axis -3
        return lambda x: torch.softmax(x, dim=-3)
    axis = int(p.axis)
    return lambda x: torch.softmax(x, dim=axis)


@_reads("innerProduct")
def _inner_product(layer: Any, p: Any) -> Kernel:
    if p.int8DynamicQuantize:
        raise _unsupported(layer, "int8 dynamic quantisation")
    c_in = p.inputChannels
    weight = _weights(p.weights, (p.outputChannels, c_in), layer, "weights")
    bias = _weights(p.bias, (p.outputChannels,), layer, "bias") if p.hasBias else None

    def inner_product(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == c_in:  # ND form: the last axis
            return torch.nn.functional.linear(x, weight, bias)
        if x.dim() >= 3 and tuple(x.shape[-3:]) == (c_in, 1, 1):  # rank-5-era form: (C, 1, 1)
            y = torch.nn.functional.linear(x.flatten(-3), weight, bias)
            return y.reshape(*y.shape, 1, 1)
        raise ExportError(f"innerProduct {layer.name!r}: input shape {tuple(x.shape)} does not fit {c_in} channels")

    return inner_product


@_reads("batchedMatmul")
def _batched_matmul(layer: Any, p: Any) -> Kernel:
    if p.int8DynamicQuantize:
        raise _unsupported(layer, "int8 dynamic quantisation")
    if len(layer.input) != 2:  # the converter writes constant weights as innerProduct instead
        raise _unsupported(layer, "weights stored in the layer")
    transpose_a, transpose_b = p.transposeA, p.transposeB
    return lambda a, b: kernels.matmul(a, b, transpose_a, transpose_b)


@_reads("concatND", "concat")
def _concat(layer: Any, p: Any) -> Kernel:
    if layer.WhichOneof("layer") == "concat":
        axis = -5 if p.sequenceConcat else -3
    else:
        if p.interleave:
            raise _unsupported(layer, "interleave")
        axis = int(p.axis)
    return lambda *xs: torch.cat(xs, dim=axis)


@_reads("reduceSum", "reduceMean", "reduceMax")
def _reduce(layer: Any, p: Any) -> Kernel:
    kind = {"reduceSum": "sum", "reduceMean": "mean", "reduceMax": "max"}[layer.WhichOneof("layer")]
    axes = None if p.reduceAll else [int(a) for a in p.axes]
    keep_dims = p.keepDims
    return lambda x: kernels.reduce(x, kind, axes, keep_dims)


@_reads("loadConstantND")
def _load_constant(layer: Any, p: Any) -> Kernel:
    value = _weights(p.data, tuple(p.shape), layer, "data")
    return lambda: value


def read_neural_network(spec: Any) -> Graph:
    kind = spec.WhichOneof("Type")
    if kind != "neuralNetwork":
        raise UnsupportedOpError(kind or "empty", "model", "only plain neuralNetwork models are read")
    network = spec.neuralNetwork
    scale, bias = _preprocessing(network, spec.description.input[0])
    nodes = []
    for layer in network.layers:
        kind = layer.WhichOneof("layer")
        reader = NN_LAYERS.get(kind)
        if reader is None:
            raise UnsupportedOpError(kind or "empty", layer.name)
        kernel = reader(layer, getattr(layer, kind))
        nodes.append(Node(kind, layer.name, tuple(layer.input), tuple(layer.output), kernel,
                          tuple(torch.float32 for _ in layer.output)))
    return Graph(
        format="neuralnetwork",
        precision="fp32",
        input_name=spec.description.input[0].name,
        input_dtype=torch.float32,
        output_name=spec.description.output[0].name,
        nodes=nodes,
        image_input=image_input(spec.description.input[0], scale, bias),
    )


def _preprocessing(network: Any, feature: Any) -> tuple[float, tuple[float, float, float]]:
    """(scale, per-channel bias in the declared colour order) of the input's scaler; (1, 0) without one."""
    entries = list(network.preprocessing)
    if not entries:
        return 1.0, (0.0, 0.0, 0.0)
    if len(entries) != 1 or entries[0].featureName not in ("", feature.name):
        raise UnsupportedOpError("preprocessing", "model", f"{len(entries)} preprocessing entries")
    kind = entries[0].WhichOneof("preprocessor")
    if kind != "scaler":
        raise UnsupportedOpError("preprocessing", "model", f"{kind} preprocessing")
    s = entries[0].scaler
    first, last = (s.blueBias, s.redBias) if COLOR_SPACES.get(feature.type.imageType.colorSpace) == "BGR" else (
        s.redBias, s.blueBias)
    return s.channelScale or 1.0, (first, s.greenBias, last)
