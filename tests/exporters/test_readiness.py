"""Today's accelerator readiness of the XS export, pinned: a later change that splits a phone file's graph for
NNAPI / Core ML, makes a .tflite unfit for the GPU delegate or leaves more of an integer file in float fails here."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from exporters.converters.to_tflite_int8 import TAIL_OPS
from judging.manifest import MANIFEST_NAME
from judging.readiness import lost

pytestmark = pytest.mark.e2e

ORT_PROVIDERS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
#: the soft-argmax tail the integer recipes keep in float on purpose (exporters/converters/to_tflite_int8.py)
SOFT_ARGMAX_TAIL = {"QUANTIZE", "DEQUANTIZE", *TAIL_OPS}


@pytest.fixture(scope="module")
def artifacts(xs_int8_export):
    out, _ = xs_int8_export
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    return out, manifest, {a["file"]: a for a in manifest["artifacts"]}


def test_phone_onnx_files_are_one_partition_for_nnapi_and_both_core_ml_providers(artifacts):
    _, _, by_file = artifacts
    for name in ("convnextpose-XS.sim.onnx", "convnextpose-XS.ort"):
        providers = by_file[name]["readiness"]["providers"]
        for p in ORT_PROVIDERS:
            assert (providers[p]["verdict"], providers[p]["partitions"]) == ("YES", 1), (name, p, providers[p])


def test_int8_onnx_files_run_whole_on_nnapi_and_core_ml_is_stated_to_lack_qdq(artifacts):
    _, _, by_file = artifacts
    for name in ("convnextpose-XS_int8-qdq.onnx", "convnextpose-XS_int8-qdq.ort"):
        providers = by_file[name]["readiness"]["providers"]
        assert (providers["NNAPI"]["verdict"], providers["NNAPI"]["partitions"]) == ("YES", 1), providers["NNAPI"]
        for p in ("CoreML NeuralNetwork", "CoreML MLProgram"):
            assert providers[p]["lacks_quantization_ops"], providers[p]


def test_every_tflite_is_gpu_ready_and_integer_files_name_their_float_ops(artifacts):
    _, _, by_file = artifacts
    tflites = {f: a for f, a in by_file.items() if f.endswith(".tflite")}
    assert len(tflites) >= 5
    for name, a in tflites.items():
        assert a["readiness"]["gpu_delegate"]["compatible"], (name, a["readiness"])
        assert ("float_ops" in a["readiness"]) == ("int8" in a["precision"]), name
    # the full-integer recipe leaves only the soft-argmax tail in float; the pointwise-only one also the depthwise
    assert set(by_file["convnextpose-XS_int8-w8a8-mixed.tflite"]["readiness"]["float_ops"]) <= SOFT_ARGMAX_TAIL
    assert "DEPTHWISE_CONV_2D" in by_file["convnextpose-XS_int8-w8a8-pw.tflite"]["readiness"]["float_ops"]


def test_no_phone_file_lost_its_readiness_and_core_ml_states_its_target(artifacts):
    _, _, by_file = artifacts
    for name, a in by_file.items():
        if name != "convnextpose-XS.onnx":  # the exporter's raw graph is not the phone file
            assert lost(a["readiness"]) == [], name
    assert by_file["convnextpose-XS.mlpackage"]["readiness"]["minimum_deployment_target"] == "iOS15"
    assert by_file["convnextpose-XS.mlmodel"]["readiness"]["compute_precision"] == "fp32"


def test_ort_files_come_with_the_reduced_build_operator_configuration(artifacts):
    out, manifest, by_file = artifacts
    config = out / "convnextpose-XS.required_operators.config"
    assert config.name in manifest["extras"] and config.is_file()
    lines = [line for line in config.read_text().splitlines() if line and not line.startswith("#")]
    ops = {op for line in lines for op in line.split(";")[2].split(",")}
    # the soft-argmax as ORT's providers take it (exporters/converters/onnx_mobile.py)
    assert {"Conv", "Resize", "GlobalMaxPool", "Pow", "MatMul", "QuantizeLinear", "DequantizeLinear"} <= ops, ops
    for name in ("convnextpose-XS.ort", "convnextpose-XS_int8-qdq.ort"):
        assert (out / name).read_bytes()[4:8] == b"ORTM", name  # the ORT flatbuffer's file identifier
        assert by_file[name]["details"]["reduced_build_config"] == config.name
        ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
