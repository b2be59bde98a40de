"""A borderline cost judged on more images (judging/more_images.py), the rule at the cap
(judging/gates.settle_borderline), and the images drawn for it (judging/inputs.more_judged_images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from judging.gates import BORDERLINE, BORDERLINE_COST, OVER, OVER_BUDGET, WITHIN, Budgets, judge, settle_borderline
from judging.inputs import InputSet, augmented_photo_crops, load_images, more_judged_images
from judging.judged_rows import disjoint_photos
from judging.more_images import judge_until_decided
from judging.references import References
from models.network import ConvNeXtPose


@pytest.fixture(scope="module")
def tiny_refs(tiny_spec) -> References:
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((40, 3, tiny_spec.input_size, tiny_spec.input_size), dtype=np.float32)
    return References(ConvNeXtPose(tiny_spec).eval(), images)


def _file_joints(refs: References, rows: np.ndarray, scale: float) -> np.ndarray:
    """A file's joints: the reference moved by a heavy-tailed error that depends on the row only."""
    out = refs.fp32[rows].copy()
    for i, row in enumerate(rows):
        rng = np.random.default_rng(int(row))
        out[i, :, :2] += scale * rng.standard_t(3, (out.shape[1], 2))
    return out


def _judged_first(refs: References, budget: float, scale: float, first: int = 5):
    judged = np.zeros(len(refs.rgb01), bool)
    judged[:first] = True
    first_refs = References(refs.model, refs.rgb01[:first])
    joints = _file_joints(refs, np.arange(first), scale)
    return judge(joints, "int8", first_refs, judged[:first], Budgets(int8=budget)), joints, judged[:first]


def _runner(refs: References, scale: float, fed: list[int]):
    """run_all of a file on rows first..: knows its rows by the images it is given."""
    def run_all(images: np.ndarray) -> np.ndarray:
        rows = np.array([int(np.flatnonzero((refs.rgb01 == im).all(axis=(1, 2, 3)))[0]) for im in images])
        fed.append(len(rows))
        return _file_joints(refs, rows, scale)
    return run_all


def _draw(refs: References, first: int, drawn: list[int]):
    def draw(extra: int):
        drawn.append(extra)
        rows = refs.rgb01[first:first + extra]
        return InputSet(rows, tuple(f"row{i}" for i in range(first, first + extra))), References(
            refs.model, refs.rgb01[:first + extra])
    return draw


def test_a_borderline_cost_is_judged_on_doubling_counts_up_to_the_cap_running_only_new_images(tiny_refs):
    scale = 0.3
    probe, _, _ = _judged_first(tiny_refs, 1.0, scale)
    budget = (probe.interval.low_input_px + probe.interval.high_input_px) / 2  # inside the first interval
    verdict, joints, judged = _judged_first(tiny_refs, budget, scale)
    assert verdict.kind == BORDERLINE
    fed, drawn = [], []
    final = judge_until_decided(verdict, joints, judged, "int8", Budgets(int8=budget), _draw(tiny_refs, 5, drawn),
                                _runner(tiny_refs, scale, fed), cap=40)
    assert drawn[:3] == [5, 15, 35][:len(drawn)]  # 10, 20, 40 judged images in all
    assert fed == [b - a for a, b in zip([0, *drawn], drawn)]  # each image run once
    assert final.cost.n_inputs == 5 + drawn[-1] and (final.kind != BORDERLINE or final.cost.n_inputs == 40)
    assert final.interval.images == final.cost.n_inputs


def test_a_cost_clearly_inside_or_outside_its_budget_decides_on_the_first_images(tiny_refs):
    for budget, kind in ((50.0, WITHIN), (1e-4, OVER)):
        verdict, joints, judged = _judged_first(tiny_refs, budget, 0.3)
        drawn: list[int] = []
        final = judge_until_decided(verdict, joints, judged, "int8", Budgets(int8=budget), _draw(tiny_refs, 5, drawn),
                                    _runner(tiny_refs, 0.3, []), cap=40)
        assert final.kind == kind and not drawn and final.cost.n_inputs == 5


def test_at_the_cap_a_borderline_cost_is_decided_by_its_p99_or_rejected_on_request(tiny_refs):
    probe, _, _ = _judged_first(tiny_refs, 1.0, 0.3)
    p99 = probe.cost.p99_input_px
    for budget in (0.9 * p99 + 0.1 * probe.interval.low_input_px, 0.5 * (p99 + probe.interval.high_input_px)):
        verdict, _, _ = _judged_first(tiny_refs, budget, 0.3)
        assert verdict.kind == BORDERLINE
        assert settle_borderline(verdict, reject_borderline=False) is verdict  # p99 decides, as judge() did
        assert verdict.published == (p99 <= budget)
        strict = settle_borderline(verdict, reject_borderline=True)
        assert not strict.published
        assert strict.reason == (BORDERLINE_COST if verdict.published else OVER_BUDGET)
        assert "--reject-borderline" in strict.describe() or not verdict.published
    within, _, _ = _judged_first(tiny_refs, 50.0, 0.3)
    assert settle_borderline(within, reject_borderline=True) is within


# ---- the images drawn for a photo-judged cost ----------------------------------------------------------
def _photos(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i, (w, h) in enumerate(((120, 90), (80, 100), (200, 90))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_augmented_crops_depend_on_photo_index_and_seed_only(tmp_path):
    folder = _photos(tmp_path / "photos")
    six = augmented_photo_crops(folder, ["p0.png", "p1.png"], 32, 6, seed=0)
    assert six.sources == ("p0.png:aug0", "p1.png:aug0", "p0.png:aug1", "p1.png:aug1", "p0.png:aug2", "p1.png:aug2")
    four = augmented_photo_crops(folder, ["p0.png", "p1.png"], 32, 4, seed=0)
    np.testing.assert_array_equal(four.images, six.images[:4])  # a longer draw starts with a shorter one
    alone = augmented_photo_crops(folder, ["p1.png"], 32, 2, seed=0)
    np.testing.assert_array_equal(alone.images, six.images[[1, 3]])  # whatever other photos are drawn
    other_seed = augmented_photo_crops(folder, ["p0.png", "p1.png"], 32, 6, seed=1)
    assert not np.array_equal(other_seed.images, six.images)
    assert len({im.tobytes() for im in six.images}) == 6  # six different crops
    np.testing.assert_array_equal(np.round(six.images * 255) / 255, six.images)  # 8-bit pictures, as photos are


def test_more_images_for_a_calibrated_file_come_from_the_photos_it_is_judged_on_only(tiny_spec, tmp_path):
    folder = _photos(tmp_path / "photos")
    inputs = load_images(folder, tiny_spec.input_size)  # p2 is wide: left/centre/right crops
    calibration = {inputs.photo_digests["p0.png"]}  # p0 calibrated: the file is judged on p1, p2
    judged = disjoint_photos(inputs, calibration)
    assert sorted({s.split(":")[0] for s, j in zip(inputs.sources, judged) if j}) == ["p1.png", "p2.png"]
    more = more_judged_images(tiny_spec, inputs, 5, 0, judged)
    assert {s.split(":")[0] for s in more.sources} == {"p1.png", "p2.png"}
    extended = inputs.with_more(more)
    # the same judged-row rule over the extended set (what verify applies) marks every new row judged
    mask = disjoint_photos(extended, calibration)
    assert mask[len(inputs):].all() and (mask[:len(inputs)] == judged).all()
    assert extended.judged_mask()[len(inputs):].all()  # an uncalibrated file: photo rows too
