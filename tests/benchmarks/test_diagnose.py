"""`convnextpose diagnose` on a real export: every artifact scored at every boundary, and a conversion
that lost one BatchNorm is pointed at the block that lost it."""

from __future__ import annotations

import copy
import json

import pytest
from torch import nn

from benchmarks.diagnose import DIAGNOSE_JSON, DIAGNOSE_PNG, diagnose
from cli import main
from exporters.converters import to_coreml, to_onnx
from exporters.formats import MLMODEL
from judging.divergence import CEILING_DB
from judging.manifest import Manifest
from models.contract import InputContract
from models.folding import fold_normalization

pytestmark = pytest.mark.e2e


def test_every_artifact_is_diagnosed_at_every_boundary(xs_int8_export, tmp_path, capsys):
    out, _ = xs_int8_export
    manifest = Manifest.read(out)
    code = main(["diagnose", str(out), "--report-dir", str(tmp_path), "--count", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / DIAGNOSE_JSON).read_text())
    assert (tmp_path / DIAGNOSE_PNG).stat().st_size > 10_000
    assert [a["file"] for a in report["artifacts"]] == [a.file for a in manifest.artifacts]
    assert len(report["artifacts"]) == 13 and report["failures"] == {}
    kinds = {a.file: a for a in manifest.artifacts}
    for art in report["artifacts"]:
        snrs = [b["snr_db"] for b in art["boundaries"]]
        assert len(snrs) == len(report["boundaries"])
        if art["file"].endswith(".ort"):  # a flatbuffer ORT cannot expose inside: the output boundary only
            assert snrs[-1] is not None and set(snrs[:-1]) == {None}, art
            continue
        assert None not in snrs
        arithmetic = kinds[art["file"]].verdict["arithmetic"]
        assert art["first_jump"] is None, art  # nothing beyond each file's own precision
        if arithmetic == "fp32":  # a correct fp32 conversion: float rounding at every boundary
            assert min(snrs) > 60 and art["error_enters_at"] is None, art
        else:  # the precision's error enters at the first layer
            assert art["error_enters_at"] == "backbone.downsample_layers.0", art
            assert min(snrs) > (35 if arithmetic.startswith("fp16") else 15), art
            assert max(snrs[:-2]) < CEILING_DB
        assert art["file"] in printed


def _broken_model(loaded, module_path: str):
    """The reference network (normalisation folded, as exported) with one BatchNorm replaced by identity."""
    model = fold_normalization(copy.deepcopy(loaded.build_model()))
    owner = model.get_submodule(module_path)
    owner.norm = nn.Identity()
    return model


@pytest.mark.parametrize("module_path, label", [
    ("backbone.stages.0.1", "backbone.stages.0.1"),
    ("backbone.stages.2.3", "backbone.stages.2.3"),
    ("head.deconv_layers_2", "head.deconv_layers_2"),
])
def test_a_dropped_batchnorm_is_found_at_its_block(xs_int8_export, tmp_path, module_path, label):
    out, _ = xs_int8_export
    loaded = Manifest.read(out).load_checkpoint()
    broken = tmp_path / "convnextpose-XS.onnx"
    to_onnx.export_onnx(_broken_model(loaded, module_path), InputContract.for_spec(loaded.spec, True), broken, {})
    result = diagnose(out, broken, images=2)
    (divergence,) = result.results
    assert divergence.first_jump.boundary == label
    before = [b.snr_db for b in divergence.boundaries[:[b.boundary for b in divergence.boundaries].index(label)]]
    assert min(before) >= CEILING_DB - 1  # everything before the block is still exact


def test_a_dropped_batchnorm_in_core_ml_is_found_too(xs_int8_export, tmp_path):
    out, _ = xs_int8_export
    loaded = Manifest.read(out).load_checkpoint()
    broken = tmp_path / "convnextpose-XS.mlmodel"
    to_coreml.export_coreml(_broken_model(loaded, "backbone.stages.1.0"), InputContract.for_spec(loaded.spec, True),
                            broken, MLMODEL, {"variant": "XS"}, "image")
    (divergence,) = diagnose(out, broken, images=1).results
    assert divergence.first_jump.boundary == "backbone.stages.1.0"


def test_diagnose_names_a_file_it_cannot_place(xs_int8_export, tmp_path, capsys):
    out, _ = xs_int8_export
    stray = tmp_path / "weights.bin"
    stray.write_bytes(b"\0" * 16)
    assert main(["diagnose", str(out), "--artifact", str(stray)]) == 2
    assert "weights.bin: not an artifact file name" in capsys.readouterr().err
    assert main(["diagnose", str(out), "--artifact", "nope.onnx"]) == 2
    assert "nope.onnx: no such file, and not an artifact of" in capsys.readouterr().err
