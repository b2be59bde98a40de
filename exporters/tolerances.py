"""The one table of parity tolerances, per (format, precision).

Float artifacts: max |delta| of any joint coordinate (x, y in heatmap px, z in depth bins) against
the PyTorch fp32 reference, over the whole verification set. Integer artifacts (``P99_GATED``): the
99th percentile of the 2-D joint error over the inputs the weights are judged on (the synthetic
task's images for the trained-synthetic reference weights, the photos otherwise) -- int8 moves a
few joints whose fp32 heatmap is itself ambiguous by a pixel or more, so a max would gate on those.
Chosen from measured errors with margin (README "Parity"); a stage that exceeds its tolerance fails.
"""

from __future__ import annotations

TOLERANCE_HEATMAP_PX: dict[tuple[str, str], float] = {
    ("pytorch", "fp32"): 1e-3,  # eager with normalisation folded vs the checkpoint's own model
    ("onnx", "fp32"): 1e-3,
    ("onnx-simplified", "fp32"): 1e-3,
    # XNNPACK's fp32 kernels: measured <= 2e-3 on 32^3 heatmaps, 0.027 on peaky 64^3 ones (the
    # reference kernels give 0.003 there); 0.05 heatmap px is 0.2 input px at most.
    ("tflite", "fp32"): 0.05,
    # fp16 weights: measured 0.21 px max (0.006 median) on the synthetic UNTRAINED weights, whose
    # multi-modal heatmaps exaggerate small logit changes; a broken conversion moves joints by whole pixels.
    ("tflite", "fp16"): 0.5,
    ("coreml-mlmodel", "fp32"): 0.05,
    ("coreml-mlpackage", "fp16"): 0.5,
    # Integer TFLite, p99 of the 2-D error (see P99_GATED). Measured on the trained-synthetic XS/S
    # reference weights over 128 synthetic images: dynamic 0.06-0.07 px, w8a8 body 0.26-0.37 px; a
    # broken recipe (int8 soft-argmax tail) is 15 px.
    ("tflite", "int8-dynamic"): 0.25,
    ("tflite", "int8-w8a8-mixed"): 1.0,
    ("tflite", "int8-w8a8-pw"): 1.0,  # depthwise convs and ADDs float: 0.24-0.25 px
    # Core ML int8 weights (linear_quantize_weights), fp16 compute: 0.073 px p99 on XS (reference evaluator).
    ("coreml-mlpackage", "int8-weights"): 0.25,
}
#: Precisions gated on the p99 2-D error of the judged inputs instead of the max over all inputs.
P99_GATED: frozenset[str] = frozenset({"int8-dynamic", "int8-w8a8-mixed", "int8-w8a8-pw", "int8-weights"})
#: Precisions whose activation ranges come from a calibration set: judged only on inputs disjoint from it.
CALIBRATED: frozenset[str] = frozenset({"int8-w8a8-mixed", "int8-w8a8-pw"})


def tolerance_for(fmt: str, precision: str) -> float:
    try:
        return TOLERANCE_HEATMAP_PX[(fmt, precision)]
    except KeyError:
        raise KeyError(f"no parity tolerance for format {fmt!r} at precision {precision!r}") from None
