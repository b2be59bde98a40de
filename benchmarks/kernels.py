"""Is the runtime the wall? The network's own convolutions timed one at a time, in each library.

`convnextpose kernels --variant S` builds every distinct convolution of a ConvNeXt block at its
stage's resolution -- the 1x1 expand (C -> 4C), the 1x1 project (4C -> C), which are ~80% of the
network's MACs, and the 7x7 depthwise -- and times it alone, integer in and integer out (as inside
an integer body: no quantise/dequantise at the edges), with the same thread count in every library:

- TFLite (ai-edge-litert, XNNPACK): a one-op TensorFlow graph converted like the artifacts and
  quantised by ai-edge-quantizer's static recipe (the quantiser of the integer `.tflite` files),
  fp32 and int8; the depthwise conv split as the TFLite export splits it (exporters/converters/mobile_graph.py);
- ONNX Runtime: the NHWC ``com.microsoft.QLinearConv`` its optimiser turns the artifact's QDQ convs
  into, fp32 ``Conv`` beside it;
- fbgemm (PyTorch's x86 int8 GEMM, the integer roofline's library): the 1x1 convs as the GEMM they
  are (H*W x C by C x 4C).

Summed over the blocks that use each shape, the table says how fast the network's convolutions can
run on each library *at these shapes*: the square-GEMM roofline (benchmarks/roofline.py) is what a
large GEMM reaches, and K = 48 or 96 GEMMs reach less on any library. It measures kernels, not the
artifacts: their own latency is `convnextpose bench`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.roofline import best_rate, fbgemm_int8, ort_int8
from common.tables import format_table
from models.network import BLOCK_KERNEL, MLP_RATIO
from models.spec import BACKBONE_STRIDE, ModelSpec

log = logging.getLogger(__name__)
KERNELS_JSON = "kernels.json"


@dataclass(frozen=True)
class ConvShape:
    """One convolution of a block: NHWC input (1, hw, hw, cin), ``count`` of them in the network."""

    name: str
    hw: int
    cin: int
    cout: int
    kernel: int
    count: int

    @property
    def depthwise(self) -> bool:
        return self.kernel > 1

    @property
    def ops(self) -> int:
        """2 ops per MAC, the 7x7 depthwise counted as its 49 taps whatever the split."""
        taps = self.kernel**2 if self.depthwise else self.cin
        return 2 * self.hw**2 * self.cout * taps


@dataclass
class KernelTimes:
    shape: ConvShape
    micros: dict[str, float]  # library -> microseconds per call (best window)


def block_convolutions(spec: ModelSpec) -> list[ConvShape]:
    """The three convolutions of each stage's blocks, from the spec (one source of the architecture)."""
    shapes = []
    for stage, (depth, c) in enumerate(zip(spec.depths, spec.dims, strict=True)):
        hw = spec.input_size // BACKBONE_STRIDE * 2 ** (len(spec.depths) - 1 - stage)  # stem /4, then /2
        shapes += [ConvShape(f"s{stage} 1x1 expand", hw, c, MLP_RATIO * c, 1, depth),
                   ConvShape(f"s{stage} 1x1 project", hw, MLP_RATIO * c, c, 1, depth),
                   ConvShape(f"s{stage} 7x7 depthwise", hw, c, c, BLOCK_KERNEL, depth)]
    return shapes


def weights(shape: ConvShape, rng: np.random.Generator) -> np.ndarray:
    """HWIO (1x1) or HW C 1 (depthwise), scaled like a trained layer's."""
    if shape.depthwise:
        return rng.normal(0, 0.1, (shape.kernel, shape.kernel, shape.cin, 1)).astype(np.float32)
    return rng.normal(0, shape.cin**-0.5, (1, 1, shape.cin, shape.cout)).astype(np.float32)


# ---- TFLite / XNNPACK --------------------------------------------------------------------------------
def tflite_fp32(shape: ConvShape, w: np.ndarray) -> bytes:
    """A one-convolution fp32 flatbuffer, signature `serving_default(image) -> joints`, NHWC."""
    import tensorflow as tf

    from exporters.converters.to_tflite import function_to_tflite
    from models.contract import INPUT_NAME

    def conv(x):
        if not shape.depthwise:
            return tf.nn.conv2d(x, w, 1, "VALID")
        # exporters/converters/mobile_graph.SplitDepthwise7x7:
        # rows -3,-1,1,3 x |dx|<=2; rows -2,0,2; rows -3,-1,1,3 x dx=+-3
        odd, even, one = w[0::2], w[1::2], [1, 1, 1, 1]
        a = tf.nn.depthwise_conv2d(x, odd[:, 1:6], one, "SAME", dilations=[2, 1])
        b = tf.nn.depthwise_conv2d(x, even, one, "SAME", dilations=[2, 1])
        c = tf.nn.depthwise_conv2d(x, odd[:, 0::6], one, "SAME", dilations=[2, 6])
        return a + b + c

    spec = tf.TensorSpec([1, shape.hw, shape.hw, shape.cin], tf.float32, name=INPUT_NAME)
    return function_to_tflite(tf.function(conv, input_signature=[spec]).get_concrete_function(), "fp32")


@dataclass(frozen=True)
class _RandomCalibration:
    """The two methods ai-edge-quantizer's calibration needs from exporters.converters.calibration.CalibrationSet."""

    images: np.ndarray  # NHWC
    sha256: str = "random-normal"

    def __len__(self) -> int:
        return len(self.images)

    def signature_data(self, input_name: str, signature: str) -> dict:
        return {signature: [{input_name: x[None]} for x in self.images]}


def tflite_int8(fp32: bytes, shape: ConvShape, rng: np.random.Generator) -> bytes:
    """``fp32`` quantised by ai-edge-quantizer (static, int8 per-channel weights, int8 in and out)."""
    from exporters.converters.to_tflite_int8 import StaticRecipe, quantize_static

    recipe = StaticRecipe(name="kernel", float_ops=(), float_io=False)  # int8 in and out
    images = rng.normal(0, 1, (4, shape.hw, shape.hw, shape.cin)).astype(np.float32)
    return quantize_static(fp32, _RandomCalibration(images), recipe)  # type: ignore[arg-type]


def _tflite_runner(model: bytes, threads: int) -> Callable[[], object]:
    from runtimes.litert import delegated_nodes, interpreter

    partitions, delegated, nodes = delegated_nodes(model, threads)
    if partitions != 1 or delegated != nodes:
        log.warning("XNNPACK took %d of %d nodes in %d partitions", delegated, nodes, partitions)
    it = interpreter(model, threads)
    detail = it.get_input_details()[0]
    it.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
    return it.invoke


# ---- ONNX Runtime --------------------------------------------------------------------------------------
#: QLinearConv's fixed quantisation (the values do not change the kernel's speed)
X_SCALE, X_ZERO, Y_SCALE, Y_ZERO = 0.02, 128, 0.05, 128


def ort_model(shape: ConvShape, w: np.ndarray, integer: bool) -> bytes:
    """One ONNX convolution: fp32 ``Conv`` (NCHW) or what ORT's optimiser makes of a QDQ Conv,
    ``com.microsoft.QLinearConv`` with channels_last (NHWC uint8 in and out, per-channel int8 weights)."""
    from onnx import TensorProto, helper, numpy_helper

    k, group = shape.kernel, shape.cin if shape.depthwise else 1
    oihw = np.ascontiguousarray(w.transpose(2, 3, 0, 1) if shape.depthwise else w.transpose(3, 2, 0, 1))
    attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "group": group}
    if integer:
        scales = np.abs(oihw).reshape(len(oihw), -1).max(1) / 127
        inits = [numpy_helper.from_array(np.round(oihw / scales[:, None, None, None]).astype(np.int8), "w"),
                 numpy_helper.from_array(scales.astype(np.float32), "w_scale"),
                 numpy_helper.from_array(np.zeros(len(oihw), np.int8), "w_zero"),
                 numpy_helper.from_array(np.array(X_SCALE, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(X_ZERO, np.uint8), "x_zero"),
                 numpy_helper.from_array(np.array(Y_SCALE, np.float32), "y_scale"),
                 numpy_helper.from_array(np.array(Y_ZERO, np.uint8), "y_zero")]
        inputs = ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero"]
        node = helper.make_node("QLinearConv", inputs, ["y"], domain="com.microsoft", channels_last=1, **attrs)
        dtype = TensorProto.UINT8
        x_shape, y_shape = [1, shape.hw, shape.hw, shape.cin], [1, shape.hw, shape.hw, shape.cout]
    else:
        inits = [numpy_helper.from_array(oihw, "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        dtype = TensorProto.FLOAT
        x_shape, y_shape = [1, shape.cin, shape.hw, shape.hw], [1, shape.cout, shape.hw, shape.hw]
    graph = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("x", dtype, x_shape)],
                              [helper.make_tensor_value_info("y", dtype, y_shape)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _ort_runner(model: bytes, threads: int) -> Callable[[], object]:
    from runtimes.onnxrt import inference_session

    session = inference_session(model, threads)
    detail = session.get_inputs()[0]
    x = np.ones(detail.shape, np.uint8 if detail.type == "tensor(uint8)" else np.float32)
    return lambda: session.run(None, {detail.name: x})


# ---- fbgemm ------------------------------------------------------------------------------------------
def _fbgemm_runner(shape: ConvShape, w: np.ndarray) -> Callable[[], object]:
    import torch

    x = torch.quantize_per_tensor(torch.rand(shape.hw**2, shape.cin), 1 / 255, 0, torch.quint8)
    weight = torch.quantize_per_channel(torch.from_numpy(w[0, 0].T.copy()), torch.full((shape.cout,), 0.01),
                                        torch.zeros(shape.cout, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, None)
    return lambda: torch.ops.quantized.linear(x, packed, 0.05, 0)


def time_kernels(spec: ModelSpec, threads: int = 2) -> list[KernelTimes]:
    """Every block convolution of ``spec`` in every library, microseconds per call."""
    import warnings

    import torch
    from tqdm import tqdm

    warnings.simplefilter("ignore", UserWarning)  # quantized tensors' deprecation notice
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "fbgemm"
    rng = np.random.default_rng(0)
    results = []
    for shape in tqdm(block_convolutions(spec), desc="kernels", unit="conv", leave=False):
        w = weights(shape, rng)
        fp32 = tflite_fp32(shape, w)
        runners = {"TFLite fp32": _tflite_runner(fp32, threads),
                   "TFLite int8": _tflite_runner(tflite_int8(fp32, shape, rng), threads),
                   "ORT fp32": _ort_runner(ort_model(shape, w, False), threads),
                   "ORT int8": _ort_runner(ort_model(shape, w, True), threads)}
        if not shape.depthwise:
            runners["fbgemm int8"] = _fbgemm_runner(shape, w)
        results.append(KernelTimes(shape, {name: shape.ops / best_rate(run, shape.ops) / 1e3
                                           for name, run in runners.items()}))
    return results


def network_totals(results: list[KernelTimes], kinds: tuple[bool, ...] = (False,)) -> dict[str, dict[str, float]]:
    """Per library: the blocks' convolutions of the given kinds (False: 1x1, True: depthwise) summed over
    the network, in ms and GOP/s; only libraries that ran every one of them."""
    chosen = [r for r in results if r.shape.depthwise in kinds]
    libraries = set.intersection(*(set(r.micros) for r in chosen))
    ops = sum(r.shape.ops * r.shape.count for r in chosen)
    totals = {}
    for lib in sorted(libraries):
        ms = sum(r.micros[lib] * r.shape.count for r in chosen) / 1e3
        totals[lib] = {"ms": ms, "gops": ops / ms / 1e6}
    return totals


def report(results: list[KernelTimes], threads: int) -> dict:
    """Times, network sums and the square-GEMM int8 rooflines measured in this same process."""
    roof = {"fbgemm": fbgemm_int8(threads), "onnxruntime": ort_int8(threads)}
    return {"threads": threads, "int8_gemm_gops": roof,
            "kernels": [{**asdict(r.shape), "ops": r.shape.ops, "micros": r.micros} for r in results],
            "pointwise": network_totals(results, (False,)), "depthwise": network_totals(results, (True,)),
            "all": network_totals(results, (False, True))}


def tables(data: dict) -> str:
    libraries = list(data["kernels"][0]["micros"])
    rows = []
    for k in data["kernels"]:
        shape = f"{k['hw']}x{k['hw']}x{k['cin']}->{k['cout']}"
        rows.append([k["name"], shape, k["count"], f"{k['ops'] / 1e6:.0f}",
                     *(f"{k['micros'][lib]:.0f} ({k['ops'] / k['micros'][lib] / 1e3:.0f})" if lib in k["micros"]
                       else "-" for lib in libraries)])
    per_op = format_table(["convolution", "NHWC shape", "blocks", "MOP", *(f"{lib} us (GOP/s)" for lib in libraries)],
                          rows)
    best = max(data["int8_gemm_gops"].values())
    sums = []
    for part in ("pointwise", "depthwise", "all"):
        for lib, t in data[part].items():
            share = f"{100 * t['gops'] / best:.0f}%" if "int8" in lib else ""
            sums.append([part, lib, f"{t['ms']:.2f}", f"{t['gops']:.0f}", share])
    roof = ", ".join(f"{name} {gops:.0f}" for name, gops in data["int8_gemm_gops"].items())
    return "\n\n".join([per_op, format_table(["blocks' convs", "library", "ms", "GOP/s", "of int8 GEMM limit"], sums),
                        f"int8 GEMM limit (n = 2048, GOP/s): {roof}; {data['threads']} threads"])


def write_report(data: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KERNELS_JSON
    path.write_text(json.dumps(data, indent=1))
    return path
