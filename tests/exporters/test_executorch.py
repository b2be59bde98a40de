"""ExecuTorch programs (exporters/converters/to_executorch.py, runtimes/executorch_runtime.py,
runtimes/executorch_coreml.py) on a tiny network: every operator in the XNNPACK / Core ML delegate and the
same joints as PyTorch; an operator XNNPACK lacks named; a graph torch.export cannot capture refused in one
line; a program without a Core ML delegate refused by the Core ML runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import ExportError
from exporters.converters import to_executorch
from exporters.converters.mobile_graph import for_executorch
from models.folding import fold_normalization
from models.network import ConvNeXtPose
from runtimes import open_session


@pytest.fixture(scope="module")
def tiny_model(tiny_spec) -> nn.Module:
    torch.manual_seed(0)
    model = fold_normalization(ConvNeXtPose(tiny_spec)).eval()
    with torch.no_grad():  # BatchNorm statistics away from identity, as in trained weights
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _x(spec, n: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, spec.input_size, spec.input_size), dtype=np.float32)


@pytest.mark.campaign  # lowering costs ~10 s even for the tiny network
def test_fp32_program_is_delegated_whole_and_computes_what_pytorch_does(tiny_model, tiny_spec, tmp_path):
    x = _x(tiny_spec, 3)
    model, _ = for_executorch(tiny_model)  # as the export's stage lowers it: the soft-argmax the delegate takes
    details = to_executorch.export_fp32(model, torch.from_numpy(x[:1]), tmp_path / "tiny.pte")
    record = details["delegation"]
    assert record["all_ops_delegated"] and record["delegated_subgraphs"] == 1, record
    assert {"aten_convolution_default", "aten_linear_default", "aten_max_pool2d_default"} <= set(
        record["delegated_ops"])
    session = open_session("executorch", tmp_path / "tiny.pte", threads=1)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    assert np.abs(session.run_all(x) - expected).max() < 1e-3  # heatmap px; a wrong layout moves them by pixels
    assert session.runtime.startswith("executorch ")


@pytest.mark.campaign  # ~20 s even on the tiny network: PT2E's convert and the lowering are fixed costs
def test_int8_program_is_delegated_whole_and_stays_near_pytorch(tiny_model, tiny_spec, tmp_path):
    calibration = _x(tiny_spec, 8, seed=1)
    details = to_executorch.export_int8(for_executorch(tiny_model)[0], calibration, tmp_path / "tiny8.pte")
    assert details["delegation"]["all_ops_delegated"], details["delegation"]
    assert {"quantized_decomposed_quantize_per_tensor_default"} <= set(details["delegation"]["delegated_ops"])
    x = _x(tiny_spec, 4, seed=2)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    got = open_session("executorch", tmp_path / "tiny8.pte", threads=1).run_all(x)
    error = np.abs(got - expected).max()
    assert 0 < error < tiny_spec.heatmap_shape[-1] / 4, error  # quantised (not bit-equal), not broken


@pytest.mark.campaign  # lowering costs ~10 s even for the tiny network
def test_an_operator_outside_the_delegate_is_named(tiny_model, tiny_spec, tmp_path):
    """Nearest upsampling: XNNPACK (executorch 1.5.1) does not take it."""
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.AvgPool2d(2), tiny_model).eval()
    record = to_executorch.export_fp32(model, torch.from_numpy(_x(tiny_spec)), tmp_path / "n.pte")["delegation"]
    assert not record["all_ops_delegated"]
    assert any("upsample_nearest" in op for op in record["non_delegated_ops"]), record


@pytest.mark.campaign  # lowering + coremltools conversion ~10 s on the tiny network
def test_coreml_program_payload_is_the_whole_network_in_fp16(tiny_model, tiny_spec, tmp_path):
    """The Core ML delegate's payload, taken out of the .pte and run by the reference evaluator: one ML Program
    computing in fp16 (so near PyTorch, not bit-equal); a program without a Core ML delegate is refused."""
    from runtimes.coreml_reference import declared_precision
    from runtimes.executorch_coreml import extracted_package

    x = _x(tiny_spec, 3)
    details = to_executorch.export_coreml(tiny_model, torch.from_numpy(x[:1]), tmp_path / "c.pte", "fp16", "iOS16")
    record = details["delegation"]
    assert record["delegate"] == "CoreMLBackend" and record["all_ops_delegated"], record
    assert record["delegated_subgraphs"] == 1 and details["minimum_deployment_target"] == "iOS16"
    with extracted_package(tmp_path / "c.pte") as package:
        assert declared_precision(package) == "fp16"
        unpacked = package
    assert not unpacked.exists()  # nothing left behind
    session = open_session("executorch-coreml", tmp_path / "c.pte", threads=1)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(x)).numpy()
    error = np.abs(session.run_all(x) - expected).max()
    assert 0 < error < 0.05, error  # heatmap px: fp16 rounding, not a wrong layout (pixels)
    assert not session.timed and "Core ML payload" in session.runtime
    to_executorch.export_fp32(tiny_model, torch.from_numpy(x[:1]), tmp_path / "x.pte")
    with pytest.raises(ExportError, match="x.pte: 0 Core ML delegates"):
        open_session("executorch-coreml", tmp_path / "x.pte")


class _DataDependent(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joints = self.inner(x)
        return joints * 2 if joints.sum() > 0 else joints  # a branch on the values: not one graph


def test_a_graph_torch_export_cannot_capture_is_one_clear_error(tiny_model, tiny_spec, tmp_path):
    with pytest.raises(ExportError) as caught:
        to_executorch.export_fp32(_DataDependent(tiny_model), torch.from_numpy(_x(tiny_spec)), tmp_path / "bad.pte")
    message = str(caught.value)
    assert message.startswith("torch.export cannot capture this model for ExecuTorch: ")
    assert "\n" not in message and "data-dependent" in message.lower()
    assert not (tmp_path / "bad.pte").exists()


@pytest.mark.campaign
def test_an_xs_export_publishes_its_three_programs_verified_golden_and_benched(tmp_path, capsys):
    """`--formats executorch` on the shipped XS weights: both .pte files published with every op delegated,
    re-judged by verify, their golden vectors pass check-golden from the golden files, the bench times them
    with the runtime's own thread pool, and the model card lists them."""
    import json

    from benchmarks.latency import LatencySettings
    from benchmarks.run import BenchOptions, run_bench
    from cli import main
    from exporters.pipeline.export import ExportOptions, default_checkpoint, run_export
    from judging.verify import check_artifacts

    out = tmp_path / "XS"
    result = run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                                      formats=("executorch",)))
    files = {a.file: a for a in result.artifacts}
    assert set(files) == {"convnextpose-XS_xnnpack.pte", "convnextpose-XS_xnnpack-int8.pte",
                          "convnextpose-XS_coreml.pte"} and not result.rejected
    for art in files.values():
        assert art.details["delegation"]["all_ops_delegated"], art.details["delegation"]
    coreml = files["convnextpose-XS_coreml.pte"]
    assert coreml.runtime == "executorch-coreml" and coreml.details["delegation"]["delegate"] == "CoreMLBackend"
    assert coreml.readiness["coreml_delegate"]["all_ops_delegated"] and coreml.readiness["compute_precision"] == "fp16"
    assert 0 < coreml.verdict["cost"]["p99_input_px"] <= coreml.verdict["budget_input_px"]
    fp32, int8 = files["convnextpose-XS_xnnpack.pte"].verdict, files["convnextpose-XS_xnnpack-int8.pte"].verdict
    assert fp32["conversion"]["passed"]
    assert 0 < int8["cost"]["p99_input_px"] <= int8["budget_input_px"]
    assert all(c["status"] == "published" for c in check_artifacts(out))
    results = {"results": []}
    golden = json.loads((out / "golden" / "golden.json").read_text())
    for file, art in files.items():
        session = open_session(art.runtime, out / file, 2)
        joints = {}
        for inp in golden["inputs"]:
            raw = np.fromfile(out / "golden" / inp["nchw"]["file"], dtype="<f4").reshape(inp["nchw"]["shape"])
            joints[inp["id"]] = session.predict(raw)[0].tolist()
        results["results"].append({"artifact": file, "joints": joints})
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["check-golden", str(out), str(tmp_path / "results.json")]) == 0
    assert capsys.readouterr().out.count("joints within tolerance") == 3
    bench = run_bench(BenchOptions(out_dir=out, threads=1, repeats=1,
                                   settings=LatencySettings(warmup_runs=2, min_runs=5, min_seconds=0.2)))
    rows = {r["backend"]: r for r in bench["backends"]}
    for name in ("executorch-xnnpack", "executorch-xnnpack-int8"):
        assert rows[name]["status"] == "passed" and rows[name]["latency"]["p50_ms"] > 0, rows[name]
        assert rows[name]["threads"] == 1 and rows[name]["runtime"].startswith("executorch")
    assert rows["executorch-coreml"]["status"] == "parity only", rows["executorch-coreml"]  # Core ML: macOS only
    card = (out / "MODEL_CARD.md").read_text()
    assert "convnextpose-XS_xnnpack-int8.pte" in card
