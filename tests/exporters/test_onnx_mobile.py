"""The ONNX files meant for phones are taken whole by ORT's NNAPI and Core ML providers, per ORT's own checker,
and the rewrites that make them so change nothing they compute."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from exporters.converters import to_onnx
from exporters.converters.onnx_mobile import for_mobile_providers
from exporters.converters.simplify import simplify_onnx
from judging.readiness import lost, onnx_readiness
from models.contract import INPUT_NAME, InputContract
from models.folding import fold_normalization, without_batchnorm
from models.network import ConvNeXtPose
from runtimes.onnxrt import inference_session

PROVIDERS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_spec, tmp_path_factory):
    """(raw exporter graph, simplified phone graph) of a tiny network, as the export writes them."""
    folder = tmp_path_factory.mktemp("onnx-mobile")
    model = without_batchnorm(fold_normalization(ConvNeXtPose(tiny_spec)))
    raw, simplified = folder / "tiny.onnx", folder / "tiny.sim.onnx"
    to_onnx.export_onnx(model, InputContract.for_spec(tiny_spec, True), raw, {})
    simplify_onnx(raw, simplified, "onnxsim", {})
    return raw, simplified


def _run(path_or_bytes, x):
    return inference_session(path_or_bytes, threads=1).run(None, {INPUT_NAME: x})[0]


def test_the_rewrites_compute_what_the_graph_computed(tiny_onnx, tiny_spec):
    """Bit for bit for the graph's form; within fp32 rounding for the soft-argmax's ops the providers lack."""
    raw, _ = tiny_onnx
    proto = onnx.load(str(raw))
    before = proto.SerializeToString()
    x = np.random.default_rng(0).random((1, 3, tiny_spec.input_size, tiny_spec.input_size), dtype=np.float32)
    form_only = onnx.load_from_string(before)
    done = for_mobile_providers(form_only, ort_tail=False)
    assert any("Resize" in d for d in done) and any("Constant" in d for d in done), done
    np.testing.assert_array_equal(_run(form_only.SerializeToString(), x), _run(before, x))
    done = for_mobile_providers(proto)
    assert {"ReduceMax -> GlobalMaxPool", "ReduceSum -> MatMul with ones", "Exp -> Pow(e, x)"} <= {
        d.split(" ", 1)[1] for d in done}, done
    assert not [n for n in proto.graph.node if n.op_type in ("Constant", "ReduceMax", "ReduceSum", "Exp")]
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_allclose(_run(proto.SerializeToString(), x), _run(before, x), rtol=1e-5, atol=1e-5)
    assert for_mobile_providers(proto) == [], "applied twice, the second time finds nothing to do"


def test_the_phone_graph_is_one_partition_for_every_mobile_provider(tiny_onnx):
    raw, simplified = tiny_onnx
    ready = onnx_readiness(simplified)["providers"]
    for name in PROVIDERS:
        assert ready[name]["verdict"] == "YES" and ready[name]["partitions"] == 1, (name, ready[name])
        assert ready[name]["nodes_with_dynamic_shapes"] == 0
    # the exporter's own graph (empty Resize roi) is what the checker split: the test can fail
    assert onnx_readiness(raw)["providers"]["NNAPI"]["partitions"] > 1


def test_a_dynamic_batch_loses_the_readiness_and_says_why(tiny_spec, tmp_path):
    model = without_batchnorm(fold_normalization(ConvNeXtPose(tiny_spec)))
    raw, simplified = tmp_path / "dyn.onnx", tmp_path / "dyn.sim.onnx"
    to_onnx.export_onnx(model, InputContract.for_spec(tiny_spec, True), raw, {}, dynamic_batch=True)
    simplify_onnx(raw, simplified, "onnxsim", {})
    missing = lost(onnx_readiness(simplified))
    assert len(missing) == len(PROVIDERS) and all("dynamic shapes" in m for m in missing), missing
