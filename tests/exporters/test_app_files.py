"""What an iOS or Android engineer takes away: Core ML files with an image input (and its preprocessing
verified), standard TFLite metadata, golden vectors their own CI can check on the phone, a model card."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import main
from common.errors import ConvNeXtPoseError
from exporters.app_files import golden, tflite_metadata
from exporters.converters.to_tflite import read_metadata
from judging import golden as golden_check
from judging.gates import CONVERSION_ERROR
from judging.manifest import Manifest
from judging.verify import check_artifacts
from runtimes import open_session
from runtimes.litert import interpreter

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


# ---- Core ML: a picture goes in ------------------------------------------------------------------
def test_core_ml_files_declare_an_rgb_image_input(xs_int8_export):
    import coremltools as ct

    out, _ = xs_int8_export
    manifest = Manifest.read(out)
    coreml = [a for a in manifest.artifacts if a.format.startswith("coreml")]
    assert {a.precision for a in coreml} == {"fp32", "fp16", "int8-weights"}
    for art in coreml:
        feature = ct.utils.load_spec(str(out / art.file)).description.input[0]
        assert feature.name == "image" and feature.type.WhichOneof("Type") == "imageType"
        image = feature.type.imageType
        assert (image.width, image.height) == (256, 256)
        assert image.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
        assert art.layout == "image" and art.details["input_type"] == "image"
        assert art.verdict["status"] == "published"


def _edit_mlmodel(src: Path, dst: Path, edit) -> Path:
    import coremltools as ct

    spec = ct.utils.load_spec(str(src))
    edit(spec)
    ct.utils.save_spec(spec, str(dst))
    return dst


def _rerun(out: Path, art_file: str) -> dict:
    return {c["file"]: c for c in check_artifacts(out, rehash=False)}[art_file]


@pytest.mark.parametrize("mistake", ["BGR", "scale"])
def test_wrong_image_preprocessing_in_the_mlmodel_is_caught(xs_int8_export, tmp_path, mistake):
    """Declared BGR (Core ML would hand the model blue first) or not scaled by 1/255: rejected."""
    import coremltools as ct

    out = tmp_path / "XS"
    shutil.copytree(xs_int8_export[0], out)
    name = "convnextpose-XS.mlmodel"

    def edit(spec):
        if mistake == "BGR":
            spec.description.input[0].type.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR
        else:
            spec.neuralNetwork.preprocessing[0].scaler.channelScale = 1.0

    path = out / name
    _edit_mlmodel(path, path, edit)
    rerun = _rerun(out, name)
    assert rerun["reason"] == CONVERSION_ERROR, rerun["conversion"]
    assert rerun["conversion"]["max_input_px"] > 10 * rerun["conversion"]["tolerance_input_px"]


def test_a_bgr_declared_ml_program_is_caught(xs_int8_export, tmp_path):
    import coremltools as ct

    out = tmp_path / "XS"
    shutil.copytree(xs_int8_export[0], out)
    package = out / "convnextpose-XS.mlpackage"
    spec = ct.utils.load_spec(str(package))
    spec.description.input[0].type.imageType.colorSpace = ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR
    manifest_path = next(package.rglob("model.mlmodel"))
    ct.utils.save_spec(spec, str(manifest_path))
    rerun = _rerun(out, package.name)
    assert rerun["status"] == "rejected" and rerun["reason"] == CONVERSION_ERROR, rerun["cost"]


# ---- TFLite: standard metadata -------------------------------------------------------------------
def test_every_tflite_carries_standard_metadata_equal_to_the_manifest(xs_int8_export):
    out, _ = xs_int8_export
    manifest = Manifest.read(out)
    tflites = [a for a in manifest.artifacts if a.format == "tflite"]
    assert len(tflites) == 5
    for art in tflites:
        md, files = tflite_metadata.read(out / art.file)  # MediaPipe's own reader
        assert md["name"] == f"ConvNeXtPose {manifest.variant}"
        assert manifest.checkpoint["sha256"] in md["description"] and "synthetic figures only" in md["description"]
        assert md["version"].startswith("convnextpose-export ") and md["author"] == "convnextpose-export"
        assert "MIT" in md["license"]
        (image,) = md["subgraph_metadata"][0]["input_tensor_metadata"]
        assert image["name"] == "image" and image["content"]["content_properties"]["color_space"] == "RGB"
        norm = image["process_units"][0]["options"]
        assert norm == {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}  # pixels / 255: the folded contract
        (joints,) = md["subgraph_metadata"][0]["output_tensor_metadata"]
        assert joints["name"] == "joints" and manifest.output["to_depth_mm"] in joints["description"]
        assert joints["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
        assert files[tflite_metadata.LABELS_FILE].split("\n") == manifest.joints["names"]
        # the signature and the project's own JSON buffer survive
        assert interpreter(out / art.file).get_signature_list() == {
            "serving_default": {"inputs": ["image"], "outputs": ["joints"]}}
        assert read_metadata(out / art.file)["checkpoint_sha256"] == manifest.checkpoint["sha256"]


# ---- golden vectors ------------------------------------------------------------------------------
def _results_from_the_golden_files(out: Path, art_file: str) -> dict:
    """What an app test would do: read the golden input files (not our arrays), run the artifact."""
    record = json.loads((out / "golden" / "golden.json").read_text())
    entry = record["artifacts"][art_file]
    art = next(a for a in Manifest.read(out).artifacts if a.file == art_file)
    session = open_session(art.runtime, out / art_file, 2, art.layout)
    joints = {}
    for inp in record["inputs"]:
        if entry["input"] == "png":
            with Image.open(out / "golden" / inp["png"]) as img:
                x = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
        else:
            tensor = inp[entry["input"]]
            raw = np.fromfile(out / "golden" / tensor["file"], dtype="<f4").reshape(tensor["shape"])
            x = raw if entry["input"] == "nchw" else raw.transpose(0, 3, 1, 2)
        joints[inp["id"]] = session.predict(np.ascontiguousarray(x))[0].tolist()
    return {"artifact": art_file, "joints": joints}


def test_golden_vectors_pass_for_every_artifact_run_from_their_own_files(xs_int8_export, tmp_path, capsys):
    out, _ = xs_int8_export
    record = json.loads((out / "golden" / "golden.json").read_text())
    assert len(record["inputs"]) == golden.NUM_GOLDEN and len(record["artifacts"]) == 13
    assert {"synthetic", "photo"} <= {"synthetic" if i["source"].startswith("synthetic") else "photo"
                                      for i in record["inputs"]}
    results = {"results": [_results_from_the_golden_files(out, f) for f in record["artifacts"]]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["check-golden", str(out), str(tmp_path / "results.json")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("joints within tolerance") == len(record["artifacts"]) and "FAIL" not in printed


def test_perturbed_results_fail_and_name_the_joint(xs_int8_export, tmp_path, capsys):
    out, _ = xs_int8_export
    name = "convnextpose-XS_fp16.tflite"
    results = _results_from_the_golden_files(out, name)
    tolerance = json.loads((out / "golden" / "golden.json").read_text())["artifacts"][name]["tolerance_input_px"]
    moved = results["joints"]["input_001"]
    moved[13][0] += 2 * tolerance / 8  # L_Wrist, 2x the tolerance in input px (8 input px per heatmap px)
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["check-golden", str(out), str(tmp_path / "results.json")]) == 2
    captured = capsys.readouterr()
    assert "FAIL: L_Wrist" in captured.out and "outside their golden tolerance" in captured.err
    (tmp_path / "short.json").write_text(json.dumps({"artifact": name, "joints": {}}))
    assert main(["check-golden", str(out), str(tmp_path / "short.json")]) == 2
    assert "no joints for golden input 'input_000'" in capsys.readouterr().err


def test_check_golden_refuses_a_file_that_is_not_the_verified_one(xs_int8_export, tmp_path):
    out = tmp_path / "XS"
    shutil.copytree(xs_int8_export[0], out)
    name = "convnextpose-XS_fp32.tflite"
    with open(out / name, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConvNeXtPoseError, match=f"{name}: changed since it was verified"):
        golden_check.check(out, {"artifact": name, "joints": {}})


# ---- model card, licence ---------------------------------------------------------------------------
def test_the_model_card_says_what_the_weights_are_and_carries_the_manifest_figures(xs_int8_export):
    out, _ = xs_int8_export
    manifest = Manifest.read(out)
    card = (out / "MODEL_CARD.md").read_text()
    assert card.splitlines()[2].startswith("**These weights were trained on synthetic mannequin figures only")
    assert f"{manifest.spec.params:,}" in card and manifest.checkpoint["sha256"] in card
    assert "reference evaluator" in card and "not phone timings" in card and "Licence" in card
    files_section = card.split("## Files", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line for line in files_section.splitlines() if line.startswith("| `")}
    assert set(rows) == {a.file for a in manifest.artifacts}
    for art in manifest.artifacts:
        v = art.verdict
        figure = v["conversion"]["max_input_px"] if v["conversion"] else v["cost"]["p99_input_px"]
        assert f"{figure:.2g}" in rows[art.file] and f"{art.bytes / 1e6:.1f}" in rows[art.file]


def test_the_licence_file_matches_the_package_metadata():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "MIT" and (REPO / "LICENSE").read_text().startswith("MIT License")
