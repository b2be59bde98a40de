"""End-to-end export of XS: every artifact is re-run here with its own runtime and judged again with
the export's gates -- not taken from the manifest's word; one rejected artifact leaves the others."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cli import main
from common.errors import ExportError, ManifestError
from common.files import path_digest
from exporters.converters import to_tflite
from exporters.converters.to_tflite import METADATA_NAME, read_metadata
from exporters.pipeline import export as pipeline
from exporters.pipeline.export import ExportOptions, run_export
from exporters.pipeline.side_stage import can_fork
from judging.manifest import MANIFEST_NAME
from judging.verify import check_artifacts
from models.checkpoint import load_checkpoint
from models.joints import HUMAN36M
from models.preprocessing import normalise
from models.spec import REGISTRY, ModelSpec
from models.synthetic.untrained import synthetic_model, to_legacy_head_keys
from runtimes.litert import interpreter as tflite_interpreter


def _files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


def _listed(manifest: dict) -> set[str]:
    """What the manifest says OUT holds: the artifacts, golden vectors, the model card, and itself."""
    return {a["file"] for a in manifest["artifacts"]} | set(manifest["extras"]) | {MANIFEST_NAME}


FP32 = {("onnx", "fp32"), ("onnx-simplified", "fp32"), ("ort", "fp32"), ("tflite", "fp32"), ("coreml-mlmodel", "fp32")}
FP16 = {("tflite", "fp16"), ("coreml-mlpackage", "fp16")}


@pytest.mark.e2e
def test_every_artifact_passes_its_gate_when_rerun_here(xs_export):
    out, _, _ = xs_export
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    checks = {c["file"]: c for c in check_artifacts(out)}
    for art in manifest["artifacts"]:
        check = checks[art["file"]]
        assert check["status"] == "published", check
        if art["format"].startswith("coreml") and sys.platform != "darwin":
            assert "reference evaluator" in check["evaluated_by"]
        if check["conversion"]:
            assert check["conversion"]["max_px"] <= check["conversion"]["tolerance_px"]
        assert check["cost"]["p99_input_px"] == pytest.approx(art["verdict"]["cost"]["p99_input_px"], rel=1e-3,
                                                               abs=1e-6)
    published = {(a["format"], a["precision"]) for a in manifest["artifacts"]}
    rejected = {(r["format"], r["precision"]): r for r in manifest["rejected"]}
    # every fp32 artifact is correct on any checkpoint; an fp16 one is published or over its budget, never "wrong"
    assert FP32 <= published and published | set(rejected) == FP32 | FP16
    assert all(r["reason"] == "precision cost over budget" for r in rejected.values()), rejected
    # weights marked untrained: int8 is not built (its error would only measure the random heatmaps), and it says so
    assert "not trained" in manifest["skipped"]["tflite-int8"]
    # nor are more images spent on a borderline cost of such weights: every file judged on the photo crops
    crops = [s for s in manifest["verification"]["sources"] if not s.startswith(("random:", "synthetic-eval:"))]
    assert {a["verdict"]["cost"]["n_inputs"] for a in manifest["artifacts"]} == {len(crops)}


@pytest.mark.e2e
def test_the_parity_suite_catches_a_drifted_artifact(xs_export, tmp_path):
    """Perturb one weight tensor inside the ONNX and the TFLite files: the suite must flag exactly those."""
    out = tmp_path / "XS"
    shutil.copytree(xs_export[0], out)
    onnx_path = out / "convnextpose-XS.sim.onnx"
    proto = onnx.load(str(onnx_path))
    biggest = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weights = onnx.numpy_helper.to_array(biggest) * 1.5
    biggest.CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), biggest.name))
    onnx.save(proto, str(onnx_path))
    _scale_largest_tflite_buffer(out / "convnextpose-XS_fp32.tflite", 1.5)

    with pytest.raises(ManifestError, match=r"2 artifact\(s\) are not the verified ones.*XS.sim.onnx: changed"):
        check_artifacts(out)  # by default a changed file is refused before anything runs
    checks = {c["file"]: c for c in check_artifacts(out, rehash=False)}  # judged on what it computes
    assert checks["convnextpose-XS.sim.onnx"]["reason"] == "conversion error"
    assert checks["convnextpose-XS_fp32.tflite"]["reason"] == "conversion error"
    assert checks["convnextpose-XS.onnx"]["status"] == "published"


def _scale_largest_tflite_buffer(path: Path, factor: float) -> None:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    buffer = max(model.buffers, key=lambda b: 0 if b.data is None else len(b.data))
    values = np.frombuffer(bytes(buffer.data), dtype=np.float32) * factor
    buffer.data = np.frombuffer(values.astype(np.float32).tobytes(), dtype=np.uint8)
    flatbuffer_utils.write_model(model, str(path))


@pytest.mark.e2e
def test_manifest_describes_exactly_what_is_on_disk(xs_export):
    out, ckpt, _ = xs_export
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["variant"] == "XS"
    assert manifest["spec"] == REGISTRY["XS"].to_dict()
    assert manifest["checkpoint"]["sha256"] == load_checkpoint(ckpt).sha256
    assert manifest["checkpoint"]["synthetic"] is True
    assert manifest["joints"]["names"] == list(HUMAN36M.names)
    assert manifest["input"]["normalization_folded"] is True
    assert manifest["output"]["shape"] == [1, 18, 3]
    assert {"torch", "onnx2tf", "tensorflow", "coremltools"} <= set(manifest["versions"])
    assert {"load", "onnx", "tflite", "coreml", "total"} <= set(manifest["stage_seconds"])
    assert manifest["extras"] == ["convnextpose-XS.required_operators.config", "golden", "MODEL_CARD.md"]
    assert _listed(manifest) == _files(out)  # nothing half-written, nothing unlisted
    for art in manifest["artifacts"]:
        assert (art["bytes"], art["sha256"]) == path_digest(out / art["file"])


@pytest.mark.e2e
def test_tflite_contract_signature_builtin_ops_and_metadata(xs_export):
    out, ckpt, _ = xs_export
    for precision in ("fp32", "fp16"):
        path = out / f"convnextpose-XS_{precision}.tflite"
        interpreter = tflite_interpreter(path)
        assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["joints"]}}
        runner = interpreter.get_signature_runner("serving_default")
        assert list(runner.get_input_details()["image"]["shape"]) == [1, 256, 256, 3]  # NHWC
        assert list(runner.get_output_details()["joints"]["shape"]) == [1, 18, 3]
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not any(op.startswith("Flex") for op in ops) and {"REDUCE_MAX", "EXP", "SUM", "DIV"} <= ops  # the tail
        meta = read_metadata(path)
        assert meta["checkpoint_sha256"] == load_checkpoint(ckpt).sha256
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for art in (a for a in manifest["artifacts"] if a["format"] == "tflite"):
        # the XNNPACK rewrite: 3 depthwise convs per block (12 XS blocks) + 3 in the head + the backbone's last
        # BatchNorm as a 1x1 depthwise conv (models/folding.without_batchnorm)
        assert "12 blocks" in art["details"]["graph_rewrites"][0]
        assert art["details"]["ops"]["DEPTHWISE_CONV_2D"] == 3 * 12 + 3 + 1
        assert json.loads(meta["joint_names"])[0] == "Pelvis"
    assert METADATA_NAME


@pytest.mark.e2e
def test_onnx_contract_and_metadata(xs_export):
    out, _, _ = xs_export
    proto = onnx.load(str(out / "convnextpose-XS.sim.onnx"))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 256, 256]
    assert [o.name for o in proto.graph.output] == ["joints"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["variant"] == "XS" and json.loads(meta["input"])["value_range"] == [0.0, 1.0]


@pytest.mark.e2e
def test_coreml_artifacts_are_labelled_and_honest_about_parity(xs_export):
    import coremltools as ct

    out, _, _ = xs_export
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    coreml = {a["format"]: a for a in manifest["artifacts"] if a["format"].startswith("coreml")}
    assert "coreml-mlmodel" in coreml
    for art in coreml.values():
        model = ct.models.MLModel(str(out / art["file"]), skip_model_load=True)
        spec = model.get_spec()
        assert [i.name for i in spec.description.input] == ["image"]
        assert [o.name for o in spec.description.output] == ["joints"]
        assert spec.description.metadata.userDefined["variant"] == "XS"
        assert art["verdict"]["status"] == "published"
        if not ct.utils._is_macos():  # labelled: these numbers are not Core ML's own
            assert "reference evaluator" in art["verdict"]["evaluated_by"]
    assert coreml["coreml-mlmodel"]["verdict"]["conversion"]["passed"]


def _crash(*args, **kwargs):
    raise RuntimeError("injected converter crash")


@pytest.mark.e2e
def test_a_crashing_converter_rejects_its_artifacts_and_publishes_the_others(make_ckpt, tmp_path, monkeypatch,
                                                                              capsys):
    """TFLite's converter crashes: the ONNX files still ship, the manifest says what failed, exit 3."""
    monkeypatch.setattr(to_tflite, "keras_to_tflite", _crash)
    out = tmp_path / "XS"
    code = main(["export", "--variant", "XS", "--checkpoint", str(make_ckpt("XS")), "--out", str(out),
                 "--formats", "onnx,tflite"])
    assert code == 3
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "onnx-simplified"}
    rejected = {(r["format"], r["precision"]): r for r in manifest["rejected"]}
    assert set(rejected) == {("tflite", "fp32"), ("tflite", "fp16")}
    assert all(r["reason"] == "conversion failed" and "injected converter crash" in r["detail"]
               for r in rejected.values())
    assert _listed(manifest) == _files(out)  # no staging, no partial files
    assert "REJECTED: conversion failed" in capsys.readouterr().out


@pytest.mark.e2e
@pytest.mark.skipif(not can_fork(), reason="the Core ML stage runs beside the others on Linux only; inline elsewhere")
def test_a_stage_built_beside_the_others_that_dies_is_a_crash_of_that_stage(make_ckpt, tmp_path, monkeypatch):
    """The Core ML stage runs in a forked process; that process dying mid-conversion (as a kill or a native
    crash would) rejects the Core ML files as a failed stage, the others ship, no child is left behind."""
    import multiprocessing
    import os

    from exporters.converters import to_coreml

    monkeypatch.setattr(to_coreml, "export_coreml", lambda *a, **k: os._exit(7))
    result = run_export(ExportOptions(out_dir=tmp_path / "XS", variant="XS", checkpoint=make_ckpt("XS"),
                                      formats=("onnx", "coreml")))
    assert {a.format for a in result.artifacts} == {"onnx", "onnx-simplified"}
    assert {r.format for r in result.rejected} == {"coreml-mlpackage", "coreml-mlmodel"}
    assert all("stage 'coreml' failed" in r.detail and "died (exit code 7)" in r.detail for r in result.rejected)
    assert multiprocessing.active_children() == []
    assert _listed(result.manifest.to_dict()) == _files(tmp_path / "XS")


@pytest.mark.e2e
@pytest.mark.skipif(not can_fork(), reason="stages run beside the others on Linux only; inline elsewhere")
def test_a_stage_built_beside_the_others_gives_what_an_inline_build_gives(tmp_path, monkeypatch, caplog):
    """The ONNX int8 stage forks once the ONNX stage is done, with the calibration chosen before the fork:
    the same file, verdict and calibration record as the same stage built inline."""
    import logging

    from exporters.pipeline.export import default_checkpoint

    ckpt = default_checkpoint("XS", 18, 0)  # trained-like: integer artifacts are built for it
    results = {}
    for how in ("beside", "inline"):
        if how == "inline":
            monkeypatch.setattr(pipeline, "can_fork", lambda: False)
        with caplog.at_level(logging.INFO, logger="exporters"):
            caplog.clear()
            results[how] = run_export(ExportOptions(out_dir=tmp_path / how, variant="XS", checkpoint=ckpt,
                                                    formats=("onnx", "onnx-int8")))
        forked = "stage onnx-int8 started beside the others" in caplog.text
        assert forked == (how == "beside")
    beside, inline = (results[h].manifest.to_dict() for h in ("beside", "inline"))
    assert [a["file"] for a in beside["artifacts"]] == [a["file"] for a in inline["artifacts"]]
    assert beside["artifacts"][-1]["precision"] == "int8-qdq"
    for a, b in zip(beside["artifacts"], inline["artifacts"]):
        assert (a["sha256"], a["verdict"]) == (b["sha256"], b["verdict"])
    assert beside["calibration"] == inline["calibration"]


@pytest.mark.e2e
def test_strict_keeps_all_or_nothing_and_leaves_out_untouched(xs_export, tmp_path, monkeypatch):
    out = tmp_path / "XS"
    shutil.copytree(xs_export[0], out)
    before = {p.name: path_digest(p) for p in out.iterdir()}
    monkeypatch.setattr(to_tflite, "keras_to_tflite", _crash)
    with pytest.raises(ExportError, match=r"--strict(.|\n)*injected converter crash"):
        run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=xs_export[1], formats=("onnx", "tflite"),
                                 strict=True))
    assert {p.name: path_digest(p) for p in out.iterdir()} == before  # no partial files, no staging left


@pytest.mark.e2e
def test_nothing_published_is_an_error_and_leaves_out_empty(make_ckpt, tmp_path, monkeypatch):
    real_fold = pipeline.fold_normalization

    def drifted(model):  # a conversion that silently changes the weights
        folded = real_fold(model)
        with torch.no_grad():
            folded.head.final_layer.weight.mul_(1.5)
        return folded

    monkeypatch.setattr(pipeline, "fold_normalization", drifted)
    with pytest.raises(ExportError, match=r"nothing was published(.|\n)*convnextpose-XS.onnx: conversion error"):
        run_export(ExportOptions(out_dir=tmp_path / "out", variant="XS", checkpoint=make_ckpt("XS"), formats=("onnx",)))
    assert not (tmp_path / "out").exists()  # nothing published: OUT was not even created


@pytest.mark.e2e
def test_second_export_over_existing_out_stays_consistent(xs_export, tmp_path):
    out = tmp_path / "XS"
    shutil.copytree(xs_export[0], out)
    run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=xs_export[1], formats=("onnx",)))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "onnx-simplified"}
    assert _listed(manifest) == _files(out)


def test_cli_export_refuses_a_mismatched_checkpoint(make_ckpt, tmp_path, capsys):
    assert main(["export", "--variant", "S", "--checkpoint", str(make_ckpt("XS")), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not match variant S" in err and "Traceback" not in err


@pytest.mark.e2e
def test_custom_64_cubed_legacy_head_export_with_dynamic_batch(tmp_path):
    """M/L-style 64x64x64 heatmaps and legacy head keys, on a small custom network."""
    spec = ModelSpec("custom", depths=(1, 1, 1, 1), dims=(16, 32, 48, 64), head_channels=32, num_upsample=3,
                     depth_bins=64)
    state = {f"module.{k}": v for k, v in synthetic_model(spec, seed=3).state_dict().items()}
    ckpt = tmp_path / "custom.pth.tar"
    torch.save({"epoch": 1, "network": to_legacy_head_keys(state)}, ckpt)
    result = run_export(ExportOptions(out_dir=tmp_path / "out", checkpoint=ckpt, formats=("onnx", "tflite"),
                                      dynamic_batch=True, fold_normalization=False))
    assert result.manifest.spec.heatmap_shape == (64, 64, 64)
    assert result.manifest.checkpoint["head_key_style"] == "legacy-indices"
    assert result.manifest.normalization_folded is False
    # every fp32 artifact is correct; the fp16 one may be over its budget on these untrained weights
    assert {(a.format, a.precision) for a in result.artifacts} >= FP32 - {("coreml-mlmodel", "fp32"), ("ort", "fp32")}
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "out" / "convnextpose-custom.onnx"))
    batch = normalise(np.random.default_rng(0).random((3, 3, 256, 256), dtype=np.float32))
    assert session.run(None, {"image": batch})[0].shape == (3, 18, 3)


@pytest.mark.e2e
@pytest.mark.campaign
def test_a_users_export_prints_only_the_pipelines_own_lines(tmp_path):
    """`convnextpose export` as a user runs it (own process, default checkpoint, every format): before the
    summary table every line is one of ours (a timestamped log line) -- no TensorFlow/absl/oneDNN start-up,
    CUDA probe, converter warning or foreign progress bar, which come without -v only through a leak."""
    import re
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "cli", "export", "--variant", "XS", "--out", str(tmp_path / "XS")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (proc.stderr + proc.stdout).splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("ConvNeXtPose XS -> "))
    foreign = [line for line in lines[:summary] if not re.match(r"\d\d:\d\d:\d\d \S", line)]
    assert foreign == []
    noise = re.compile(r"cuda|absl|onednn|has not been tested|calibration::|out-of-range|warning", re.IGNORECASE)
    assert [line for line in lines if noise.search(line)] == []
