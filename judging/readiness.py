"""Where each file can run accelerated on a phone, asked of each runtime's own readiness checker.

- ONNX (.onnx, and the .ort converted from it): ONNX Runtime's mobile usability checker
  (``onnxruntime.tools.check_onnx_model_mobile_usability``), on the graph ORT runs (basic optimisations
  applied, as the checker and a Runtime-style .ort do): partitions, nodes taken and the verdict for
  NNAPI, Core ML NeuralNetwork and Core ML ML Program.
- TFLite: TensorFlow's analyzer with ``gpu_compatibility=True`` (the GPU delegate's verdict), and for
  integer files the ops that still compute in float -- what an NPU delegate hands back to the CPU.
- Core ML: the minimum deployment target and compute precision (the Neural Engine computes in fp16).
- ExecuTorch: whether every operator is inside the XNNPACK delegate (the export's delegation record).

A file meant for phones that a provider no longer takes whole is named in a warning (``lost``); a
provider that lacks an operator kind altogether (Core ML and the QDQ quantisation ops) is stated, not
warned about: no graph form would change it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: ORT's checker: provider -> the supported-ops table it reads (None: NNAPI's own function)
ORT_PROVIDERS = {"NNAPI": None, "CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
                 "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}
#: ONNX's quantisation ops: a provider without them runs no QDQ int8 file, whatever its form
QUANTIZATION_OPS = {"ai.onnx:QuantizeLinear", "ai.onnx:DequantizeLinear"}
_FLOAT = (np.float32, np.float16)


def onnx_readiness(path: Path) -> dict[str, Any]:
    """ORT's mobile checker on ``path`` (an ONNX file): per provider, partitions, nodes taken, verdict."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    from runtimes.versions import version_of

    with tempfile.TemporaryDirectory(prefix="ort-check-") as tmp:
        optimized = pathlib.Path(tmp) / "basic.onnx"  # what the checker's command line checks
        optimize_model(Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
    providers = {}
    for name, table in ORT_PROVIDERS.items():
        info = (checker.check_nnapi_partitions(model, True) if table is None
                else checker.check_coreml_partitions(model, True, table))
        unsupported = sorted(info.unsupported_ops)
        providers[name] = {
            "verdict": info.suitability().name,  # YES / MAYBE / NO, as the checker says it
            "partitions": int(info.num_partitions),
            "partition_sizes": [len(g) for g in info.supported_groups],
            "nodes": f"{info.num_supported_nodes}/{info.num_nodes}",
            "unsupported_ops": unsupported,
            "nodes_with_dynamic_shapes": int(info.nodes_unsupported_due_to_dynamic_input),
            **({"lacks_quantization_ops": True} if unsupported and set(unsupported) <= QUANTIZATION_OPS else {}),
        }
    return {"checker": f"onnxruntime {version_of('onnxruntime')} check_onnx_model_mobile_usability",
            "providers": providers}


def tflite_readiness(path: Path, integer: bool) -> dict[str, Any]:
    """TensorFlow's GPU-delegate analysis of ``path``; for an integer file, the ops that compute in float."""
    from common.quiet import import_quietly

    import_quietly("tensorflow")
    import tensorflow as tf

    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
    text = said.getvalue()
    record: dict[str, Any] = {"gpu_delegate": {
        "compatible": "looks compatible with GPU delegate" in text,
        "warnings": sorted({line.split("GPU COMPATIBILITY WARNING:", 1)[1].strip()
                            for line in text.splitlines() if "GPU COMPATIBILITY WARNING:" in line}),
        "analyzer": f"tensorflow {tf.__version__} tf.lite.experimental.Analyzer"}}
    if integer:
        record["float_ops"] = float_ops(path)
    return record


def float_ops(path: Path) -> dict[str, int]:
    """Op name -> how many of the file's ops read or write a float tensor the runtime computes (an op output
    or the graph input; weights are data): the ops an integer-only accelerator (NPU delegate) would hand
    back to the CPU."""
    from runtimes.litert import interpreter

    it = interpreter(path, threads=1)
    dtypes = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
    computed = {int(i) for op in ops for i in op["outputs"]} | {d["index"] for d in it.get_input_details()}
    found: dict[str, int] = {}
    for op in ops:
        if any(dtypes.get(int(i)) in _FLOAT for i in (*op["inputs"], *op["outputs"]) if int(i) in computed):
            found[op["op_name"]] = found.get(op["op_name"], 0) + 1
    return dict(sorted(found.items()))


def coreml_readiness(details: dict[str, Any]) -> dict[str, Any]:
    """From the conversion record (exporters/converters/to_coreml.py): target, model type, compute precision."""
    precision = details["compute_precision"]
    engine = "CPU, GPU, Neural Engine" if precision == "fp16" else "CPU, GPU (the Neural Engine computes in fp16 only)"
    return {"minimum_deployment_target": details["minimum_deployment_target"], "compute_precision": precision,
            "model_type": "ML Program" if details["convert_to"] == "mlprogram" else "NeuralNetwork",
            "compute_units": f"ALL: {engine}"}


def readiness(runtime: str, arithmetic: str, path: Path, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The readiness record of one published file (its runtime key and arithmetic, as the format table gives
    them), by the runtime that decides it."""
    details = details or {}
    if runtime == "onnxruntime":  # an .ort's record is its .onnx's (exporters/pipeline/stages.build_ort)
        return onnx_readiness(path)
    if runtime == "litert":
        return tflite_readiness(path, integer=arithmetic == "int8")
    if runtime == "coreml":
        return coreml_readiness(details)
    if runtime in ("executorch", "executorch-coreml"):
        delegation = details.get("delegation", {})
        record = {"all_ops_delegated": bool(delegation.get("all_ops_delegated")),
                  "subgraphs": delegation.get("delegated_subgraphs")}
        if runtime == "executorch":
            return {"xnnpack_delegate": record}
        return {"coreml_delegate": record, **coreml_readiness(details)}
    return {}


#: An ExecuTorch program's delegate record (readiness key) -> its name.
_DELEGATES = {"xnnpack_delegate": "XNNPACK", "coreml_delegate": "Core ML"}


def lost(record: dict[str, Any]) -> list[str]:
    """What a phone file's readiness misses, in words (empty: it runs whole where its kind should)."""
    missing = []
    for name, p in record.get("providers", {}).items():
        if p["verdict"] != "YES" and not p.get("lacks_quantization_ops"):
            why = ([f"{p['nodes_with_dynamic_shapes']} node(s) with dynamic shapes"] if p["nodes_with_dynamic_shapes"]
                   else []) + ([f"no {', '.join(p['unsupported_ops'])}"] if p["unsupported_ops"] else [])
            missing.append(f"{name}: {p['partitions']} partitions, {p['nodes']} nodes"
                           + (f" ({'; '.join(why)})" if why else ""))
    gpu = record.get("gpu_delegate")
    if gpu is not None and not gpu["compatible"]:
        missing.append("TFLite GPU delegate: not compatible" + (f" ({'; '.join(gpu['warnings'])})" if gpu["warnings"]
                                                                else ""))
    for key, name in _DELEGATES.items():
        if key in record and not record[key]["all_ops_delegated"]:
            missing.append(f"{name} delegate: some ops run outside it")
    return missing


def summary(record: dict[str, Any]) -> str:
    """One cell: where the file runs accelerated."""
    parts = []
    for name, p in record.get("providers", {}).items():
        short = name.replace("CoreML ", "Core ML ").replace("NeuralNetwork", "NN").replace("MLProgram", "MLP")
        parts.append(f"{short} {'whole' if p['verdict'] == 'YES' else p['nodes']}"
                     + (" (no QDQ ops)" if p.get("lacks_quantization_ops") else ""))
    if "gpu_delegate" in record:
        parts.append("GPU delegate " + ("yes" if record["gpu_delegate"]["compatible"] else "no"))
    if "float_ops" in record:
        ops = record["float_ops"]
        parts.append("float ops: " + (", ".join(f"{op} x{n}" for op, n in ops.items()) if ops else "none"))
    if "compute_precision" in record:
        parts.append(f"{record['model_type']}, {record['minimum_deployment_target']}+, {record['compute_precision']}: "
                     f"{record['compute_units'].removeprefix('ALL: ')}")
    parts += [f"{name} delegate " + ("whole" if record[key]["all_ops_delegated"] else "partial")
              for key, name in _DELEGATES.items() if key in record]
    return "; ".join(parts) or "-"
