"""Calibration sets: deterministic, in the TFLite input contract, identified by their sha256."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from common.errors import ExportError
from exporters.converters.calibration import (
    Augmentation,
    CalibrationSet,
    build_calibration_set,
    digest,
    from_callable,
    from_files,
)


@pytest.fixture()
def photo_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(80, 60), (50, 90), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_files_are_deterministic_nhwc_in_unit_range(photo_dir):
    a = from_files(photo_dir, size=32, n=7, seed=3)
    b = from_files(photo_dir, size=32, n=7, seed=3)
    assert isinstance(a, CalibrationSet) and len(a) == 7
    assert a.images.shape == (7, 32, 32, 3) and a.images.dtype == np.float32
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0
    assert a.sha256 == b.sha256 == digest(a.images) and np.array_equal(a.images, b.images)
    assert "p0.png" in a.description and "notes.txt" not in a.description
    assert a.source.startswith("files:")


def test_seed_and_augmentation_change_the_set(photo_dir):
    base = from_files(photo_dir, size=32, n=6, seed=0)
    assert from_files(photo_dir, size=32, n=6, seed=1).sha256 != base.sha256
    plain = from_files(photo_dir, size=32, n=6, seed=0, augmentation=None)
    assert plain.sha256 != base.sha256
    # without augmentation, image i is the centre crop of file i % 3: the cycle repeats
    assert np.array_equal(plain.images[0], plain.images[3])


def test_brightness_is_clipped(photo_dir):
    bright = from_files(photo_dir, size=16, n=4, augmentation=Augmentation(brightness=(3.0, 3.0)))
    assert bright.images.max() <= 1.0


def test_callable_accepts_nchw_and_nhwc_float_and_uint8():
    rng = np.random.default_rng(1)
    nchw = rng.random((4, 3, 16, 16), dtype=np.float32)
    a = from_callable(lambda n: nchw[:n], size=16, n=4, name="noise")
    b = from_callable(lambda n: nchw[:n].transpose(0, 2, 3, 1), size=16, n=4)
    assert a.sha256 == b.sha256 and np.array_equal(a.images, nchw.transpose(0, 2, 3, 1))
    u8 = from_callable(lambda n: np.full((n, 16, 16, 3), 255, np.uint8), size=16, n=2)
    assert np.all(u8.images == 1.0)
    assert build_calibration_set(lambda n: nchw[:n], size=16, n=4, augmentation=None).sha256 == a.sha256


def test_signature_data_is_the_quantizer_format(photo_dir):
    cs = from_files(photo_dir, size=16, n=3)
    data = cs.signature_data()
    assert list(data) == ["serving_default"] and len(data["serving_default"]) == 3
    assert data["serving_default"][0]["image"].shape == (1, 16, 16, 3)
    assert cs.to_manifest()["sha256"] == cs.sha256 and cs.to_manifest()["n"] == 3


def test_refusals(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        from_files(tmp_path / "missing")
    with pytest.raises(ExportError, match="holds no images"):
        from_files(tmp_path)
    with pytest.raises(ExportError, match="expected"):
        from_callable(lambda n: np.zeros((n, 5, 5)), size=5, n=2)
    with pytest.raises(ExportError, match=r"\[0, 1\]"):
        from_callable(lambda n: np.full((n, 4, 4, 3), 2.0, np.float32), size=4, n=2)


def test_released_checkpoints_calibrate_on_other_photos_than_the_judged_ones(make_ckpt, tmp_path):
    from exporters.converters.calibration import choose_calibration
    from judging.inputs import DEFAULT_IMAGES_DIR, inputs_for
    from models.checkpoint import load_checkpoint

    loaded = load_checkpoint(make_ckpt("XS"), "XS")  # not trained on the synthetic task: judged on photos
    inputs = inputs_for(loaded)
    choice = choose_calibration(loaded, inputs)
    calibrated = {name for name in choice.calibration.description.split("[")[1].split("]")[0].split(", ")}
    judged_files = {s.split(":", 1)[0] for s in choice.judged_sources}
    assert calibrated and judged_files and not calibrated & judged_files
    assert all(not s.startswith(("random:", "synthetic-eval:")) for s in choice.judged_sources)
    assert choice.judged_group is None and len(choice.calibration) == 64
    # calibrating on the very photos that are verified leaves nothing to judge: refused, not silently overlapped
    with pytest.raises(ExportError, match="contain every one of the 5 verification photos"):
        choose_calibration(loaded, inputs, calib_dir=DEFAULT_IMAGES_DIR)


def test_calibration_is_disjoint_by_content_not_by_file_name(make_ckpt, tmp_path):
    """--calib and --images folders that reuse names (000.png, ...) for other pictures are fine; the same
    pictures under other names are not."""
    from exporters.converters.calibration import choose_calibration
    from judging.inputs import inputs_for
    from models.checkpoint import load_checkpoint

    rng = np.random.default_rng(1)
    for folder in ("verify", "calib"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i:03d}.png")
    loaded = load_checkpoint(make_ckpt("XS"), "XS")
    inputs = inputs_for(loaded, tmp_path / "verify")
    choice = choose_calibration(loaded, inputs, calib_dir=tmp_path / "calib")
    assert choice.judged.sum() == 3 and choice.judged_group is None  # same names, other pictures: all judged
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i in range(3):  # the verification pictures, re-encoded as JPEG-free PNG copies under new names
        with Image.open(tmp_path / "verify" / f"{i:03d}.png") as img:
            img.convert("RGB").save(renamed / f"copy-{i}.png")
    with pytest.raises(ExportError, match="contain every one of the 3 verification photos") as err:
        choose_calibration(loaded, inputs, calib_dir=renamed)
    assert "000.png, 001.png, 002.png" in str(err.value)
