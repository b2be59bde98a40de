"""The XS and S reference weights shipped in weights/: they load, match their recorded sha256, and still
localise joints on fresh synthetic images (mean 2-D error <= 1.0 heatmap px on >= 100 images)."""

from __future__ import annotations

import pytest

from common.errors import CheckpointError
from common.files import file_digest
from models.checkpoint import load_checkpoint
from models.training import shipped
from models.training.evaluate import evaluate_synthetic

TARGET_MEAN_PX = 1.0


def _load_shipped(variant: str):
    record = shipped.records()[variant]
    path = shipped.shipped_weights(variant)
    assert path is not None and file_digest(path) == record["sha256"]
    loaded = load_checkpoint(path, variant)
    assert loaded.trained_synthetic and loaded.spec.params == record["params"]
    assert path.stat().st_size < 2.2 * loaded.spec.params  # fp16: two bytes a parameter, no optimizer state
    return loaded


@pytest.mark.parametrize("variant", ["XS", "S"])
def test_shipped_weights_load_and_match_their_sha256(variant):
    _load_shipped(variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["XS", "S"])
def test_shipped_weights_still_localise_joints(variant, one_torch_thread):
    report = evaluate_synthetic(_load_shipped(variant).build_model(), n=100, seed=1)  # fresh: another evaluation seed
    assert report.mean_px <= TARGET_MEAN_PX, report


def test_a_changed_shipped_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    copy.mkdir()
    for name in (shipped.RECORD.name, shipped.file_name("XS")):
        (copy / name).write_bytes((shipped.WEIGHTS_DIR / name).read_bytes())
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(shipped, "RECORD", copy / shipped.RECORD.name)
    assert shipped.shipped_weights("XS") == copy / shipped.file_name("XS")
    with open(copy / shipped.file_name("XS"), "r+b") as f:
        f.seek(-10, 2)
        f.write(b"0123456789")
    with pytest.raises(CheckpointError, match="sha256 differs from weights/weights.json"):
        shipped.shipped_weights("XS")
    assert shipped.shipped_weights("M") is None and shipped.shipped_weights("XS", joints=21) is None
