"""Integer TFLite variants of the exported fp32 `.tflite` (signature `serving_default(image) -> joints`).

- ``int8-dynamic``: int8 weights, float activations quantised on the fly per inference. No
  calibration; XNNPACK runs the convolutions with its dynamically-quantised (QD8) kernels.
- ``int8-w8a8-mixed``: a full-integer body -- int8 weights (per channel) and int8 activations for
  every convolution, add and resize -- with the soft-argmax tail in float. A softmax over
  J x D x H x W logits and the coordinate sums after it do not survive 8-bit activations (1.7 px
  mean error with the tail in int8), the convolutional body does.

Both are built with ai-edge-quantizer on the fp32 flatbuffer (never hand-edited) or, for the
dynamic variant, optionally with the TF Lite converter from the SavedModel (see ``to_tflite``).
The graph input and output are kept float (``no_quantize`` on INPUT/OUTPUT): otherwise they come
out int8 and the app contract (float RGB in [0, 1], joints in heatmap px) would change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from exporters.calibration import CalibrationSet
from exporters.contract import INPUT_NAME
from exporters.to_tflite import SIGNATURE_KEY

log = logging.getLogger(__name__)

ModelSource = Union[Path, str, bytes]

#: The soft-argmax tail as onnx2tf emits it: NHWC -> NCHW transpose, reshape to (1, J, D*H*W),
#: softmax, and a FULLY_CONNECTED with the constant voxel-coordinate table (BATCH_MATMUL in other
#: converters). None of these op types occurs in the body, so matching by type is enough. MUL is
#: NOT here: the body's standalone BatchNorms are MUL + ADD, and a float MUL inside the int8 body
#: costs a DEQUANTIZE/QUANTIZE pair each.
TAIL_OPS: tuple[str, ...] = ("TRANSPOSE", "RESHAPE", "SOFTMAX", "FULLY_CONNECTED", "BATCH_MATMUL")
#: Dynamic range: XNNPACK has no hybrid (int8 weight, float activation) depthwise kernel -- such
#: nodes fall back to TFLite's reference kernels and split the graph into 16 delegate partitions
#: (measured: 39 of 121 nodes left out). Depthwise weights are tiny, so they stay float.
DYNAMIC_FLOAT_OPS: tuple[str, ...] = ("DEPTHWISE_CONV_2D",) + TAIL_OPS


@dataclass(frozen=True)
class StaticRecipe:
    """A full-integer-body recipe for ai-edge-quantizer's static (SRQ) path.

    ``float_ops``: op types kept float everywhere (the tail). ``float_regexes``: output-tensor
    name patterns kept float whatever the op (e.g. the last CONV_2D, whose logits feed the
    softmax). ``activation_bits`` 8 or 16 (16 runs in reference kernels on XNNPACK: slow).
    """

    name: str = "int8-w8a8-mixed"
    activation_bits: int = 8
    weight_bits: int = 8
    weight_granularity: str = "CHANNELWISE"  # or "TENSORWISE"
    float_ops: tuple[str, ...] = TAIL_OPS
    float_regexes: tuple[str, ...] = ()
    float_io: bool = True
    #: (regex, op, activation_bits) overrides applied after the body rule, e.g. a16w8 last conv
    overrides: tuple[tuple[str, str, int], ...] = field(default_factory=tuple)
    #: How per-image activation ranges are merged over the calibration set (see ``RANGE_UPDATES``).
    range_update: str = "moving_average"


def _read(model: ModelSource) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()


def dynamic_range_aeq(fp32: ModelSource, float_ops: Sequence[str] = DYNAMIC_FLOAT_OPS) -> bytes:
    """ai-edge-quantizer `dynamic_wi8_afp32` (per-channel int8 weights, float activations), with
    ``float_ops`` left float. The tail must stay float here too: quantising the softmax output
    on the fly (probabilities ~1e-4) and the coordinate table costs 0.2 px mean."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(bytearray(_read(fp32)), recipe.dynamic_wi8_afp32())
    for op in float_ops:
        q.update_quantization_recipe(".*", qtyping.TFLOperationName(op), algorithm_key="no_quantize")
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def dynamic_range_tf(saved_model: Path) -> bytes:
    """TF Lite converter `Optimize.DEFAULT` without a representative dataset = dynamic range.

    Needs the re-signed SavedModel (``to_tflite.onnx_to_saved_model``), not the .tflite."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_KEY])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def static_recipe_rules(recipe: StaticRecipe) -> list[dict]:
    """The ai-edge-quantizer rule list for ``recipe`` (later rules win), for logs and the manifest."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.recipe_manager import RecipeManager

    gran = qtyping.QuantGranularity[recipe.weight_granularity]
    rm = RecipeManager()
    rm.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, recipe.activation_bits, recipe.weight_bits, gran)
    for regex, op, bits in recipe.overrides:
        rm.add_static_config(regex, qtyping.TFLOperationName(op), bits, recipe.weight_bits, gran)
    keep = list(recipe.float_ops) + (["INPUT", "OUTPUT"] if recipe.float_io else [])
    for op in keep:
        rm.add_quantization_config(".*", qtyping.TFLOperationName(op), algorithm_key="no_quantize")
    for regex in recipe.float_regexes:
        # ALL_SUPPORTED under its own regex: scopes are searched in insertion order, last match wins.
        rm.add_quantization_config(regex, qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key="no_quantize")
    return rm.get_quantization_recipe()


def _range_update(kind: str):
    """QSV merge functions. ai-edge-quantizer's default is an exponential moving average
    (factor 0.95) of each image's min/max: order-dependent, dominated by the last ~20 images.
    ``min_max`` takes the extremes over the whole set (no clipping of any calibration image),
    ``mean`` the plain average of per-image extremes (order-free version of the default)."""
    from ai_edge_quantizer.utils import qsv_utils

    if kind == "moving_average":
        return qsv_utils.moving_average_update
    if kind == "min_max":
        return qsv_utils.min_max_update
    if kind == "mean":
        counts: dict[int, int] = {}

        def mean_update(qsv, new_qsv):
            if not qsv:
                return dict(new_qsv)
            # qsv dicts are per tensor and replaced on update: count by the id of the result
            n = counts.pop(id(qsv), 1)
            out = {k: (qsv[k] * n + new_qsv[k]) / (n + 1) for k in ("min", "max")}
            counts[id(out)] = n + 1
            return out

        return mean_update
    raise ValueError(f"range_update {kind!r} is not one of moving_average, min_max, mean")


def calibrate(fp32: ModelSource, calibration: CalibrationSet, recipe: StaticRecipe = StaticRecipe(),
              num_threads: int = 2) -> dict:
    """Per-tensor activation ranges (QSVs) of the float model on the calibration set."""
    from ai_edge_quantizer import calibrator, recipe_manager

    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(static_recipe_rules(recipe))
    calib = calibrator.Calibrator(bytearray(_read(fp32)), num_threads=num_threads,
                                  qsv_update_func=_range_update(recipe.range_update))
    calib.calibrate(calibration.signature_data(INPUT_NAME, SIGNATURE_KEY), rm)
    log.info("calibrated %s on %d images (%s), ranges merged by %s", recipe.name, len(calibration),
             calibration.sha256[:12], recipe.range_update)
    return calib.get_model_qsvs()


def quantize_static(fp32: ModelSource, calibration: CalibrationSet, recipe: StaticRecipe = StaticRecipe(),
                    num_threads: int = 2, qsvs: dict | None = None) -> bytes:
    """Calibrate on ``calibration`` (unless ``qsvs`` are given) and quantise with ``recipe``."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(bytearray(_read(fp32)), static_recipe_rules(recipe))
    qsvs = qsvs if qsvs is not None else calibrate(fp32, calibration, recipe, num_threads)
    return bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)


def op_types(model: ModelSource) -> dict[str, dict[str, int]]:
    """{op name: {output dtype: count}}: shows which ops ended up int8 and which float."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=_read(model))
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    hist: dict[str, dict[str, int]] = {}
    for op in it._get_ops_details():
        dtype = tensors[op["outputs"][0]]["dtype"].__name__ if op["outputs"].size else "-"
        hist.setdefault(op["op_name"], {}).setdefault(dtype, 0)
        hist[op["op_name"]][dtype] += 1
    return hist


def unique_ops(names: Sequence[str]) -> list[str]:
    return sorted(set(names))


def tail_input_regex(model: ModelSource, tail_ops: Sequence[str] = TAIL_OPS) -> str:
    """Anchored regex for the output tensor of the op that feeds the first tail op (the last
    CONV_2D, whose logits go into the softmax): names are converter-made, so find it by graph."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=_read(model))
    ops = it._get_ops_details()
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    first_tail = next(o for o in ops if o["op_name"] in tail_ops)
    # ai-edge-quantizer's op scope is the op's output tensor names joined by ';' plus a trailing ';'.
    return "^" + re.escape(names[int(first_tail["inputs"][0])]) + ";$"
