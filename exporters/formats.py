"""The format table: every format an export can produce, in one place, as data.

An :class:`ExportFormat` is one ``--formats`` choice: the stage that builds it (named, imported only
by the pipeline), what it needs first, and the artifacts it writes. An :class:`ArtifactKind` is one
of those files: its suffix, input layout, the runtime that verifies it (and that the bench times it
with), and the arithmetic it computes in, which decides how it is judged (judging/gates.py). The
pipeline, the CLI (choices, defaults, help), the manifest, the bench and the parity suite all read
this table: adding a format is one row, its stage (exporters/pipeline/stages.py) and, for a new
runtime, its runner. The module imports nothing but the standard library, so every room can read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FORMATS", "ArtifactKind", "CoreMLTarget", "ExportFormat", "default_formats", "describe_formats",
           "find_kind", "format_names", "get_format", "resolve_formats"]

_STAGES = "exporters.pipeline.stages:"


@dataclass(frozen=True)
class ArtifactKind:
    """One file an export can write."""

    format: str  # manifest "format"
    precision: str
    suffix: str  # the file is f"{stem}{suffix}", e.g. convnextpose-S_fp16.tflite
    layout: str  # input layout: NCHW or NHWC
    runtime: str  # runtimes key: onnxruntime | litert | coreml | executorch
    backend: str  # bench row name
    #: what the file computes in, which decides how it is judged (judging/gates.py): "fp32" (correct
    #: to the fp32 noise floor), "fp16-weights", "fp16" or "int8" (cost within the budget)
    arithmetic: str
    #: meant for a phone app: its accelerator readiness is checked and a loss warned about (judging/readiness.py)
    for_phones: bool = True

    def file_name(self, stem: str) -> str:
        return f"{stem}{self.suffix}"


@dataclass(frozen=True)
class ExportFormat:
    """One ``--formats`` choice and the stage that builds its artifacts."""

    name: str
    help: str
    artifacts: tuple[ArtifactKind, ...]
    #: the stage that builds it, "module:function" (exporters/pipeline/stages.py), imported only by the
    #: pipeline: the table is data, so the bench and the judges read it without importing a converter
    build: str
    requires: tuple[str, ...] = ()  # formats whose verified artifacts this one is built from
    default: bool = True  # part of the default --formats
    #: built in a forked process beside the other stages (exporters/pipeline/side_stage.py), started as soon as the
    #: stages it requires are done
    beside: bool = False
    #: run in the export process before a beside stage forks, for what later stages share with it
    prepare: str | None = None  # "module:function", (ExportRun) -> None

    def stage(self) -> Callable[..., None]:
        """The build function, (ExportRun, ExportFormat) -> None."""
        return resolve(self.build)

    def preparation(self) -> Callable[..., None] | None:
        return resolve(self.prepare) if self.prepare else None

    def kind(self, fmt: str, precision: str) -> ArtifactKind:
        for kind in self.artifacts:
            if (kind.format, kind.precision) == (fmt, precision):
                return kind
        raise KeyError(f"format {self.name} has no artifact {fmt} {precision}")


def resolve(reference: str) -> Callable[..., None]:
    """The function a "module:function" reference names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- Core ML targets: the file each Core ML kind is and what the converter makes of it ----------------
@dataclass(frozen=True)
class CoreMLTarget:
    format: str
    suffix: str  # appended to the artifact stem: "XS" + suffix is the file name
    precision: str
    convert_to: str
    min_target: str  # coremltools.target attribute name
    # Post-training weight compression of the ML Program: None, "int8-linear-symmetric" or "palette6-kmeans".
    compression: str | None = None
    # Weights of at most this many elements stay fp16 (coremltools' weight_threshold; its default is 2048).
    weight_threshold: int = 512

    @property
    def compute_precision(self) -> str:
        """Precision of the activations and arithmetic: fp32 only for the fp32 targets."""
        return "fp32" if self.precision == "fp32" else "fp16"

    def file_name(self, stem: str) -> str:
        return f"{stem}{self.suffix}"


MLPACKAGE = CoreMLTarget("coreml-mlpackage", ".mlpackage", "fp16", "mlprogram", "iOS15")
# iOS 14, not 13: align-corners bilinear upsampling needs NeuralNetwork spec version 5.
MLMODEL = CoreMLTarget("coreml-mlmodel", ".mlmodel", "fp32", "neuralnetwork", "iOS14")
# iOS 16: the constexpr_affine_dequantize / constexpr_lut_to_dense ops that hold compressed weights
# exist from iOS 16 (ML Program opset CoreML6). iOS 18 would store them as
# constexpr_blockwise_shift_scale / a differently shaped constexpr_lut_to_dense instead.
MLPACKAGE_INT8 = CoreMLTarget("coreml-mlpackage", "_int8-weights.mlpackage", "int8-weights", "mlprogram", "iOS16",
                              compression="int8-linear-symmetric")
MLPACKAGE_PALETTE6 = CoreMLTarget("coreml-mlpackage", "_palette6.mlpackage", "palette6", "mlprogram", "iOS16",
                                  compression="palette6-kmeans")
# Measured on the trained-synthetic XS reference weights, 50 synthetic evaluation images, reference
# evaluator, 2-D joint error vs PyTorch fp32 (max / p99 heatmap px): fp16 7.3 MB 0.031 / 0.011;
# int8-weights 3.9 MB 0.19 / 0.073; palette6 3.0 MB 2.2 / 1.37 (one 64-entry LUT per tensor is too
# coarse for this network: palette6 is not accurate enough to ship; a per-tensor 8-bit palette,
# "palette8-kmeans", is 3.9 MB at 0.71 / 0.25, worse than int8-weights at the same size).
COMPRESSED_TARGETS = (MLPACKAGE_INT8, MLPACKAGE_PALETTE6)
TARGETS = (MLPACKAGE, MLMODEL, *COMPRESSED_TARGETS)
# The payload of ExecuTorch's Core ML delegate (exporters/converters/to_executorch.py), not a coremltools
# file of its own: iOS 16 is the oldest OS that ExecuTorch's Core ML backend runs on (its docs).
EXECUTORCH_COREML = CoreMLTarget("executorch", "_coreml.pte", "coreml-fp16", "mlprogram", "iOS16")


#: TFLite files converted from the Keras model (exporters/converters/to_tflite.py).
TFLITE_PRECISIONS = ("fp32", "fp16")
#: Integer TFLite files quantised from the verified fp32 file (exporters/converters/to_tflite_int8.py):
#: dynamic range, the two static recipes, and the adaptive recipe built only when int8-w8a8-mixed misses
#: its budget.
TFLITE_INT8_PRECISIONS = ("int8-dynamic", "int8-w8a8-mixed", "int8-w8a8-pw", "int8-w8a8-adaptive")


#: Arithmetic of each TFLite precision: fp16 files hold fp16 weights and compute in fp32.
_TFLITE_ARITHMETIC = {"fp32": "fp32", "fp16": "fp16-weights"}


def _tflite(precision: str) -> ArtifactKind:
    return ArtifactKind("tflite", precision, f"_{precision}.tflite", "NHWC", "litert", f"tflite-{precision}",
                        _TFLITE_ARITHMETIC.get(precision, "int8"))


def _coreml(target: CoreMLTarget, backend: str) -> ArtifactKind:
    arithmetic = "int8" if target.compression else target.compute_precision  # fp16 ML Programs: fp16 tensors
    return ArtifactKind(target.format, target.precision, target.suffix, "NCHW", "coreml", backend, arithmetic)


FORMATS: list[ExportFormat] = [
    ExportFormat("onnx", "ONNX (TorchScript exporter, opset 17) and its simplified graph", (
        # the exporter's graph as written: the phone's ONNX file is the simplified one
        ArtifactKind("onnx", "fp32", ".onnx", "NCHW", "onnxruntime", "onnxruntime", "fp32", for_phones=False),
        ArtifactKind("onnx-simplified", "fp32", ".sim.onnx", "NCHW", "onnxruntime", "onnxruntime-simplified", "fp32"),
    ), _STAGES + "build_onnx"),
    ExportFormat("tflite", "TFLite fp32 and fp16 weights (NHWC, builtin ops, XNNPACK graph)",
                 tuple(_tflite(p) for p in TFLITE_PRECISIONS), _STAGES + "build_tflite"),
    ExportFormat("tflite-int8", "integer TFLite quantised from the verified fp32 .tflite",
                 tuple(_tflite(p) for p in TFLITE_INT8_PRECISIONS), _STAGES + "build_tflite_int8",
                 requires=("tflite",)),
    ExportFormat("onnx-int8", "ONNX Runtime static int8 (QDQ) of the verified simplified ONNX", (
        ArtifactKind("onnx", "int8-qdq", "_int8-qdq.onnx", "NCHW", "onnxruntime", "onnxruntime-int8-qdq", "int8"),
    ), _STAGES + "build_onnx_int8", requires=("onnx",), beside=True, prepare=_STAGES + "prepare_calibration"),
    ExportFormat("ort", "ORT Mobile format (.ort) of the simplified fp32 and the int8 ONNX, with the operator "
                 "configuration of a reduced ONNX Runtime build", (
        ArtifactKind("ort", "fp32", ".ort", "NCHW", "onnxruntime", "onnxruntime-ort", "fp32"),
        ArtifactKind("ort", "int8-qdq", "_int8-qdq.ort", "NCHW", "onnxruntime", "onnxruntime-ort-int8-qdq", "int8"),
    ), _STAGES + "build_ort", requires=("onnx",)),
    ExportFormat("coreml", "Core ML .mlpackage (fp16, int8 weights) and .mlmodel (fp32)", (
        _coreml(MLPACKAGE, "coreml-mlpackage"),
        _coreml(MLMODEL, "coreml-mlmodel"),
        _coreml(MLPACKAGE_INT8, "coreml-mlpackage-int8-weights"),
    ), _STAGES + "build_coreml", beside=True),
    ExportFormat("executorch", "ExecuTorch .pte: XNNPACK delegate fp32 and int8 (PT2E), Core ML delegate fp16; "
                 "opt-in: its lowering adds ~1.5 min to an S export", (
        ArtifactKind("executorch", "fp32", "_xnnpack.pte", "NCHW", "executorch", "executorch-xnnpack", "fp32"),
        ArtifactKind("executorch", "int8-pt2e", "_xnnpack-int8.pte", "NCHW", "executorch", "executorch-xnnpack-int8",
                     "int8"),
        ArtifactKind("executorch", EXECUTORCH_COREML.precision, EXECUTORCH_COREML.suffix, "NCHW", "executorch-coreml",
                     "executorch-coreml", EXECUTORCH_COREML.compute_precision),
    ), _STAGES + "build_executorch", default=False, beside=True, prepare=_STAGES + "prepare_calibration"),
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
