"""The one table of parity tolerances, per (format, precision).

Unit: max |delta| of any joint coordinate (x, y in heatmap px, z in depth bins) against the
PyTorch fp32 reference, over the whole verification set. Chosen from measured errors with
margin (README "Parity"); a stage that exceeds its tolerance fails.
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
}


def tolerance_for(fmt: str, precision: str) -> float:
    try:
        return TOLERANCE_HEATMAP_PX[(fmt, precision)]
    except KeyError:
        raise KeyError(f"no parity tolerance for format {fmt!r} at precision {precision!r}") from None
