"""The format table: every format an export can produce, in one place.

An :class:`ExportFormat` is one ``--formats`` choice: the stage that builds it, what it needs
first, and the artifacts it writes. An :class:`ArtifactKind` is one of those files: its suffix,
input layout, the runtime that verifies it (and that the bench times it with), and the arithmetic
it computes in, which decides how it is judged (exporters/gates.py). The pipeline, the CLI
(choices, defaults, help), the manifest, the bench and the parity suite all read this table:
adding a format is one row, its stage (exporters/stages.py) and, for a new runtime, its runner.
"""

from __future__ import annotations

from exporters import stages, to_coreml, to_tflite, to_tflite_int8
from exporters.kinds import ArtifactKind, ExportFormat

__all__ = ["FORMATS", "ArtifactKind", "ExportFormat", "default_formats", "describe_formats", "find_kind",
           "format_names", "get_format", "resolve_formats"]

#: Arithmetic of each TFLite precision: fp16 files hold fp16 weights and compute in fp32.
_TFLITE_ARITHMETIC = {"fp32": "fp32", "fp16": "fp16-weights"}


def _tflite(precision: str) -> ArtifactKind:
    return ArtifactKind("tflite", precision, f"_{precision}.tflite", "NHWC", "litert", f"tflite-{precision}",
                        _TFLITE_ARITHMETIC.get(precision, "int8"))


def _coreml(target: to_coreml.CoreMLTarget, backend: str) -> ArtifactKind:
    arithmetic = "int8" if target.compression else target.compute_precision  # fp16 ML Programs: fp16 tensors
    return ArtifactKind(target.format, target.precision, target.suffix, "NCHW", "coreml", backend, arithmetic)


FORMATS: list[ExportFormat] = [
    ExportFormat("onnx", "ONNX (TorchScript exporter, opset 17) and its simplified graph", (
        ArtifactKind("onnx", "fp32", ".onnx", "NCHW", "onnxruntime", "onnxruntime", "fp32"),
        ArtifactKind("onnx-simplified", "fp32", ".sim.onnx", "NCHW", "onnxruntime", "onnxruntime-simplified", "fp32"),
    ), stages.build_onnx),
    ExportFormat("tflite", "TFLite fp32 and fp16 weights (NHWC, builtin ops, XNNPACK graph)",
                 tuple(_tflite(p) for p in to_tflite.PRECISIONS), stages.build_tflite),
    ExportFormat("tflite-int8", "integer TFLite quantised from the verified fp32 .tflite",
                 tuple(_tflite(p) for p in to_tflite_int8.PRECISIONS), stages.build_tflite_int8,
                 requires=("tflite",)),
    ExportFormat("onnx-int8", "ONNX Runtime static int8 (QDQ) of the verified simplified ONNX", (
        ArtifactKind("onnx", "int8-qdq", "_int8-qdq.onnx", "NCHW", "onnxruntime", "onnxruntime-int8-qdq", "int8"),
    ), stages.build_onnx_int8, requires=("onnx",), beside=True, prepare=stages.prepare_calibration),
    ExportFormat("coreml", "Core ML .mlpackage (fp16, int8 weights) and .mlmodel (fp32)", (
        _coreml(to_coreml.MLPACKAGE, "coreml-mlpackage"),
        _coreml(to_coreml.MLMODEL, "coreml-mlmodel"),
        _coreml(to_coreml.MLPACKAGE_INT8, "coreml-mlpackage-int8-weights"),
    ), stages.build_coreml, beside=True),
]


def format_names() -> list[str]:
    return [f.name for f in FORMATS]


def default_formats() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS if f.default)


def get_format(name: str) -> ExportFormat:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise KeyError(f"unknown format {name!r}; choose from {', '.join(format_names())}")


def find_kind(fmt: str, precision: str) -> ArtifactKind | None:
    """The kind of a manifest artifact, or None for a format this table no longer has."""
    for export_format in FORMATS:
        for kind in export_format.artifacts:
            if (kind.format, kind.precision) == (fmt, precision):
                return kind
    return None


def resolve_formats(requested: tuple[str, ...] | None) -> list[ExportFormat]:
    """The requested formats in build order; unknown names and missing prerequisites are errors."""
    from common.errors import ExportError

    names = default_formats() if requested is None else requested
    unknown = [n for n in names if n not in format_names()]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; choose from {', '.join(format_names())}")
    chosen = [f for f in FORMATS if f.name in names]
    for fmt in chosen:
        missing = [r for r in fmt.requires if r not in names]
        if missing:
            raise ExportError(f"format {fmt.name} is built from the verified {', '.join(missing)} artifacts: add "
                              f"{', '.join(missing)} to --formats")
    return chosen


def describe_formats() -> str:
    """The --formats help text, from the table."""
    return "; ".join(f"{f.name}: {f.help}" + (f" (needs {', '.join(f.requires)})" if f.requires else "")
                     for f in FORMATS)
