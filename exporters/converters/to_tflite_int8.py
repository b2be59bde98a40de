"""Integer TFLite variants of the exported fp32 `.tflite` (signature `serving_default(image) -> joints`).

- ``int8-dynamic`` (:func:`dynamic_range`): int8 per-channel weights for the CONV_2Ds, float
  activations quantised on the fly. No calibration; XNNPACK runs those convs with its
  dynamically-quantised (QD8) kernels.
- ``int8-w8a8-mixed`` (:func:`quantize_static` with :data:`W8A8_MIXED`): the full-integer body --
  int8 per-channel weights and int8 activations for every convolution, add and resize -- with the
  soft-argmax tail (TAIL_OPS) kept float. A softmax over J x D x H x W logits and the coordinate sums
  after it do not survive 8-bit activations (3.9 px mean error with them in int8, measured on XS), the
  body does.

Both are built with ai-edge-quantizer on the fp32 flatbuffer (never hand-edited); its metadata
buffer and signature survive. The graph input and output stay float (``no_quantize`` on the
INPUT/OUTPUT pseudo-ops): otherwise they come out int8 and the app contract (float RGB in [0, 1],
joints in heatmap px) changes. What makes int8 fast on XNNPACK (measured, ai-edge-litert 2.3.0):
every node must be delegated (one partition; check with ``delegated_nodes``), and the 7x7
depthwise convs must stay split as ``mobile_graph`` does -- XNNPACK's int8 7x7 depthwise is even
slower than its fp32 one (XS: 120 ms unsplit vs 8 ms split, fp32 17 ms). The gain is in the 1x1
convolutions (3x); int8 depthwise convs gain nothing (see ``W8A8_POINTWISE``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.quiet import hushed
from exporters.converters.calibration import CalibrationSet
from models.contract import INPUT_NAME
from runtimes.litert import SIGNATURE_KEY

log = logging.getLogger(__name__)

ModelSource = Path | str | bytes

#: The soft-argmax tail as onnx2tf emits it (models/network.SoftArgmax3D): NHWC -> NCHW TRANSPOSE, RESHAPEs,
#: REDUCE_MAX, SUB, EXP, SUMs over one axis at a time, MULs with the axis indices, CONCATENATION, DIV. None of
#: these op types occurs in the body (DEPTHWISE_CONV_2D, CONV_2D, ADD, RESIZE_BILINEAR once every BatchNorm is
#: folded), so matching by type is enough.
TAIL_OPS: tuple[str, ...] = ("TRANSPOSE", "RESHAPE", "REDUCE_MAX", "SUB", "EXP", "SUM", "MUL", "CONCATENATION", "DIV")
#: The tail is float from the logits on: its sums of exponentials and the coordinate sums do not survive 8-bit
#: activations (an int8 softmax tail cost ~120 px). The RESHAPEs sit between float ops now, so they are float
#: too (an int8 reshape there would put a QUANTIZE/DEQUANTIZE pair in the middle of the sums). EXP and
#: REDUCE_MAX are not ops ai-edge-quantizer quantises at all: they stay float without a rule.
TAIL_FLOAT_OPS: tuple[str, ...] = tuple(op for op in TAIL_OPS if op not in ("EXP", "REDUCE_MAX"))
#: Dynamic range: XNNPACK has no hybrid (int8 weight, float activation) depthwise kernel -- such
#: nodes fall back to TFLite's reference kernels and split the graph into 16 delegate partitions
#: (measured: 39 of 121 nodes left out, 2x slower). Depthwise weights are tiny: they stay float.
#: The tail stays float too (its MULs' constant index vectors are weights a dynamic recipe would quantise).
DYNAMIC_FLOAT_OPS: tuple[str, ...] = ("DEPTHWISE_CONV_2D",) + TAIL_FLOAT_OPS


@dataclass(frozen=True)
class StaticRecipe:
    """A full-integer-body recipe for ai-edge-quantizer's static (SRQ) path.

    ``float_ops``: op types kept float everywhere (the tail). ``activation_bits`` 8 or 16 (16 runs
    in reference kernels on XNNPACK: slow). Activation ranges are ai-edge-quantizer's default moving
    average of per-image min/max (extremes over the set, or their plain mean: < 0.05 px p99 apart).
    """

    name: str = "int8-w8a8-mixed"
    activation_bits: int = 8
    weight_bits: int = 8
    weight_granularity: str = "CHANNELWISE"  # TENSORWISE: same speed, +0.1 px p99 on XS
    float_ops: tuple[str, ...] = TAIL_FLOAT_OPS
    float_io: bool = True  # graph INPUT/OUTPUT stay float: the app contract is unchanged
    #: op-scope regexes quantised (None: every op); exporters/converters/int8_adaptive.py quantises one layer alone
    only_scopes: tuple[str, ...] | None = None
    #: op-scope regexes kept float whatever their type (the layers an adaptive recipe keeps float)
    float_scopes: tuple[str, ...] = ()


#: The full-integer-body recipe (the artifact `int8-w8a8-mixed`): every conv int8.
W8A8_MIXED = StaticRecipe()
#: Faster and more accurate, but not "every convolution int8": depthwise convs and ADDs float,
#: pointwise/stem/downsampling/head convs int8 (`int8-w8a8-pw`). XNNPACK's int8 depthwise kernels
#: are slower than its fp32 ones here (XS, 64x64x40, one block's split 7x7: 1.15 vs 0.90 ms, while
#: the block's two 1x1 convs go 0.92 -> 0.29 ms), so the float depthwise pays for its Q/DQ pairs.
W8A8_POINTWISE = StaticRecipe(name="int8-w8a8-pw", float_ops=TAIL_FLOAT_OPS + ("DEPTHWISE_CONV_2D", "ADD"))
#: W8A8_MIXED with the layers this checkpoint cannot afford in int8 kept float: built only when
#: W8A8_MIXED misses its budget (exporters/converters/int8_adaptive.py).
ADAPTIVE = "int8-w8a8-adaptive"


def _read(model: ModelSource) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()


def dynamic_range(fp32: ModelSource, float_ops: Sequence[str] = DYNAMIC_FLOAT_OPS) -> bytes:
    """The `int8-dynamic` artifact: ai-edge-quantizer `dynamic_wi8_afp32` (per-channel int8
    weights, float activations) with ``float_ops`` left float (see ``DYNAMIC_FLOAT_OPS``)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(bytearray(_read(fp32)), recipe.dynamic_wi8_afp32())
    for op in float_ops:
        q.update_quantization_recipe(".*", qtyping.TFLOperationName(op), algorithm_key="no_quantize")
    with hushed():  # its own progress bars
        return bytes(q.quantize(enable_progress_report=False).quantized_model)


def static_recipe_rules(recipe: StaticRecipe) -> list[dict]:
    """The ai-edge-quantizer rule list for ``recipe`` (later rules win), for logs and the manifest."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.recipe_manager import RecipeManager

    gran = qtyping.QuantGranularity[recipe.weight_granularity]
    everything = qtyping.TFLOperationName.ALL_SUPPORTED
    rm = RecipeManager()
    for scope in recipe.only_scopes or (".*",):
        rm.add_static_config(scope, everything, recipe.activation_bits, recipe.weight_bits, gran)
    for op in _float_ops(recipe):
        rm.add_quantization_config(".*", qtyping.TFLOperationName(op), algorithm_key="no_quantize")
    for scope in recipe.float_scopes:
        rm.add_quantization_config(scope, everything, algorithm_key="no_quantize")
    return rm.get_quantization_recipe()


def _float_ops(recipe: StaticRecipe) -> list[str]:
    return list(recipe.float_ops) + (["INPUT", "OUTPUT"] if recipe.float_io else [])


def calibrate(fp32: ModelSource, calibration: CalibrationSet, recipe: StaticRecipe = StaticRecipe(),
              num_threads: int = 2) -> dict:
    """Per-tensor activation ranges (QSVs: min/max) of the float model on the calibration set, for
    every tensor ``recipe`` quantises (a recipe that keeps more ops float can reuse them)."""
    from ai_edge_quantizer import calibrator, recipe_manager

    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(static_recipe_rules(recipe))
    calib = calibrator.Calibrator(bytearray(_read(fp32)), num_threads=num_threads)
    with hushed():  # a bar of one step per op and image
        calib.calibrate(calibration.signature_data(INPUT_NAME, SIGNATURE_KEY), rm)
    log.debug("calibrated %s on %d images (sha256 %s)", recipe.name, len(calibration), calibration.sha256[:12])
    return calib.get_model_qsvs()


def quantize_static(fp32: ModelSource, calibration: CalibrationSet, recipe: StaticRecipe = StaticRecipe(),
                    num_threads: int = 2, qsvs: dict | None = None) -> bytes:
    """Calibrate on ``calibration`` (unless ``qsvs`` are given) and quantise with ``recipe``."""
    return quantize_with_ranges(fp32, recipe, qsvs if qsvs is not None else calibrate(fp32, calibration, recipe,
                                                                                    num_threads))


def quantize_with_ranges(fp32: ModelSource, recipe: StaticRecipe, qsvs: dict) -> bytes:
    """Quantise with ``recipe`` and the activation ranges of an earlier calibration (``calibrate``), which
    must cover every tensor ``recipe`` quantises."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(bytearray(_read(fp32)), static_recipe_rules(recipe))
    with hushed():
        return bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)


def describe_dynamic(float_ops: Sequence[str] = DYNAMIC_FLOAT_OPS) -> str:
    """The int8-dynamic recipe in one line, for the manifest."""
    return (f"ai-edge-quantizer dynamic_wi8_afp32 (int8 per-channel weights, float activations); "
            f"no_quantize: {', '.join(float_ops)}")


def describe_static(recipe: StaticRecipe, float_layers: Sequence[str] = ()) -> str:
    """A static recipe in one line, for the manifest (``float_layers``: names of its float scopes)."""
    where = "every op" if recipe.only_scopes is None else f"{len(recipe.only_scopes)} op scope(s)"
    layers = f"; layers kept float: {', '.join(float_layers)}" if float_layers else ""
    return (f"ai-edge-quantizer static w{recipe.weight_bits}a{recipe.activation_bits} "
            f"({recipe.weight_granularity.lower()} weights, ranges merged by moving_average) on {where}; "
            f"no_quantize: {', '.join(_float_ops(recipe))}{layers}")
