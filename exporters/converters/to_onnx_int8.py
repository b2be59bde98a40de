"""ONNX Runtime int8 (`int8-qdq`): the verified simplified ONNX, statically quantised by ONNX Runtime.

``onnxruntime.quantization.quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs
around each quantised op, which ORT fuses into integer kernels on load, and which ORT Mobile runs):
per-channel symmetric int8 weights, per-tensor activations calibrated by min/max on the same
calibration set as the integer TFLite files. Everything after the last convolution -- the
soft-argmax tail (Reshape, Softmax, MatMul with the voxel coordinates) -- stays float, for the
reason the TFLite recipes keep it float (exporters/converters/to_tflite_int8.py).

Measured on S (2-core AVX-512 VNNI, 100 synthetic images): uint8 activations x int8 weights run in
3.6 ms against 10.4 ms for int8 x int8 (ORT's x86 kernels are u8 x s8). Weights use 7 of their 8
bits (``reduce_range``): without VNNI, x86 computes u8 x s8 with an int16 pairwise sum that
saturates for 8-bit weights (255 x 127 x 2 > 32767), so a full-range file could compute something
else on an AVX2 laptop than what was verified here -- and ONNX Runtime has no switch to emulate
that CPU. The cost here: p99 1.64 vs 1.69 px, max 7.9 vs 3.8 px, same speed.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from common.quiet import hushed
from models.contract import INPUT_NAME


def tail_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes after the last Conv (the soft-argmax), by name."""
    nodes = list(model.graph.node)
    last_conv = max(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    return [n.name for n in nodes[last_conv + 1:]]


def quantize_qdq(fp32: Path, out: Path, calibration_nchw: np.ndarray, activation_type: str = "QUInt8",
                 reduce_range: bool = True) -> dict:
    """Write the int8 QDQ model of ``fp32`` to ``out``; ``calibration_nchw`` as the model takes it."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(calibration_nchw.astype(np.float32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._samples, None)
            return None if sample is None else {INPUT_NAME: sample[None]}

    excluded = tail_nodes(onnx.load(str(fp32), load_external_data=False))
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as tmp, hushed():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range,
                        activation_type=QuantType[activation_type], weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    quantized = onnx.load(str(out))
    counts = Counter(n.op_type for n in quantized.graph.node)
    return {"recipe": describe(activation_type, excluded, reduce_range), "float_nodes": excluded,
            "qdq_nodes": {op: counts[op] for op in ("QuantizeLinear", "DequantizeLinear")},
            "calibration_images": int(len(calibration_nchw))}


def describe(activation_type: str, excluded: list[str], reduce_range: bool) -> str:
    weights = "7-bit (reduce_range)" if reduce_range else "8-bit"
    return (f"onnxruntime.quantization.quantize_static, QDQ, per-channel symmetric {weights} int8 weights, "
            f"{activation_type} activations (min/max); float: {', '.join(excluded)}")
