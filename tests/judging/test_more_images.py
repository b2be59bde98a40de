"""A borderline cost judged on more images (judging/more_images.py), the rule at the cap
(judging/gates.settle_borderline), and the images drawn for it (judging/inputs.more_judged_images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from judging.gates import BORDERLINE, BORDERLINE_COST, OVER, OVER_BUDGET, WITHIN, Budgets, judge, settle_borderline
from judging.inputs import (
    MAX_ROWS_PER_JUDGED_CROP,
    InputSet,
    box_crops,
    judged_crops,
    load_images,
    more_judged_images,
    most_judged_rows,
)
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
    final = judge_until_decided(verdict, joints, judged, None, "int8", Budgets(int8=budget), _draw(tiny_refs, 5, drawn),
                                _runner(tiny_refs, scale, fed), cap=40)
    assert drawn[:3] == [5, 15, 35][:len(drawn)]  # 10, 20, 40 judged images in all
    assert fed == [b - a for a, b in zip([0, *drawn], drawn)]  # each image run once
    assert final.cost.n_inputs == 5 + drawn[-1] and (final.kind != BORDERLINE or final.cost.n_inputs == 40)
    assert final.interval.images == final.cost.n_inputs


def test_a_cost_clearly_inside_or_outside_its_budget_decides_on_the_first_images(tiny_refs):
    for budget, kind in ((500.0, WITHIN), (1e-6, OVER)):
        verdict, joints, judged = _judged_first(tiny_refs, budget, 0.3)
        drawn: list[int] = []
        final = judge_until_decided(verdict, joints, judged, None, "int8", Budgets(int8=budget),
                                    _draw(tiny_refs, 5, drawn), _runner(tiny_refs, 0.3, []), cap=40)
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
    within, _, _ = _judged_first(tiny_refs, 500.0, 0.3)
    assert settle_borderline(within, reject_borderline=True) is within


# ---- the images drawn for a photo-judged cost ----------------------------------------------------------
def _photos(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir()
    for i, (w, h) in enumerate(((120, 90), (80, 100), (200, 90))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_box_crops_depend_on_the_judged_crop_index_and_seed_only(tmp_path):
    folder = _photos(tmp_path / "photos")
    crops = ["p0.png:centre", "p2.png:left"]
    six = box_crops(folder, crops, 32, 6, seed=0)
    assert six.sources == ("p0.png:centre:box0", "p2.png:left:box0", "p0.png:centre:box1", "p2.png:left:box1",
                           "p0.png:centre:box2", "p2.png:left:box2")
    four = box_crops(folder, crops, 32, 4, seed=0)
    np.testing.assert_array_equal(four.images, six.images[:4])  # a longer draw starts with a shorter one
    alone = box_crops(folder, ["p2.png:left"], 32, 2, seed=0)
    np.testing.assert_array_equal(alone.images, six.images[[1, 3]])  # whatever other crops are drawn
    other_seed = box_crops(folder, crops, 32, 6, seed=1)
    assert not np.array_equal(other_seed.images, six.images)
    assert len({im.tobytes() for im in six.images}) == 6  # six different crops
    np.testing.assert_array_equal(np.round(six.images * 255) / 255, six.images)  # 8-bit pictures, as photos are


def test_a_box_is_the_judged_crop_jittered_a_little_not_a_zoom_into_the_figure(tmp_path):
    """The whole figure stays in view: a box is the judged crop scaled by at most 10 % and moved by at most
    5 % of its side (mirrored or not), so it matches the judged crop far better than another photo does."""
    photo = np.zeros((120, 200, 3), np.uint8)
    photo[40:80, 80:120] = 255  # a bright "figure" in the middle of the centre crop
    (tmp_path / "p").mkdir()
    Image.fromarray(photo).save(tmp_path / "p" / "fig.png")
    judged = load_images(tmp_path / "p", 64)
    centre = judged.images[judged.sources.index("fig.png:centre")]
    boxes = box_crops(tmp_path / "p", ["fig.png:centre"], 64, 20, seed=0).images
    for box in boxes:
        mirrored = box[:, :, ::-1]
        overlap = max(float((np.minimum(b, centre) > 0.5).sum()) for b in (box, mirrored))
        assert overlap > 0.6 * float((centre > 0.5).sum())  # most of the figure where it was
        assert 0.75 < float((box > 0.5).sum()) / float((centre > 0.5).sum()) < 1.33  # same size, give or take


def test_crops_of_one_photo_are_one_unit_of_evidence(tiny_spec, tmp_path):
    folder = _photos(tmp_path / "photos")
    inputs = load_images(folder, tiny_spec.input_size)  # p2 is wide: three crops of one photo
    judged = np.ones(len(inputs), bool)
    more = more_judged_images(tiny_spec, inputs, 10, 0, judged)
    units = inputs.with_more(more).units()
    digest = {f: f"photo:{d}" for f, d in inputs.photo_digests.items()}
    assert list(units) == [digest[s.split(":")[0]] for s in inputs.with_more(more).sources]
    assert len(set(units)) == 3  # three photos, however many crops
    assert most_judged_rows(inputs, judged, 160) == MAX_ROWS_PER_JUDGED_CROP * len(judged_crops(inputs, judged))


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
