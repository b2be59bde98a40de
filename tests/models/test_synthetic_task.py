"""The synthetic pose task renders what its targets say, and a short training run moves the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint
from models.network import build_model
from models.spec import ModelSpec, spec_for
from models.synthetic.task import EVAL, render_batch, render_sample, targets
from models.training.train import Schedule, evaluate_synthetic, train_reference, write_trained_checkpoint

TINY = ModelSpec("tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                 depth_bins=8, joints=18, input_size=64)


def test_rendering_is_deterministic_per_seed_and_split():
    a, b = render_sample(3, 5, 64), render_sample(3, 5, 64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.joints_px, b.joints_px)
    assert np.array_equal(a.depth_mm, b.depth_mm)
    for other in (render_sample(4, 5, 64), render_sample(3, 6, 64), render_sample(3, 5, 64, split=EVAL)):
        assert not np.array_equal(a.image, other.image)
        assert not np.array_equal(a.joints_px, other.joints_px)


@pytest.mark.parametrize("size", [256, 64])
def test_joints_lie_inside_the_crop_and_on_the_drawn_figure(size):
    on_figure = differs = total = 0
    for index in range(30):
        s = render_sample(0, index, size)
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert (s.joints_px >= 0).all() and (s.joints_px <= size - 1).all()
        x, y = np.round(s.joints_px).astype(int).T
        on_figure += int(s.mask[y, x].sum())
        differs += int((np.abs(s.image[y, x].astype(int) - s.background[y, x]).sum(axis=1) > 20).sum())
        total += len(x)
    # at 64 px a few limb ends are thinner than a pixel; at 256 every joint is on the figure
    assert on_figure / total >= (1.0 if size == 256 else 0.99)
    assert differs / total >= 0.98


def test_targets_are_in_heatmap_pixels_and_depth_bins():
    d, h, w = TINY.heatmap_shape
    joints = np.array([[[0.0, 0.0], [32.0, 16.0], [63.0, 63.0]]])
    depth = np.array([[0.0, -1000.0, 2000.0]])
    t = targets(joints, depth, TINY)
    assert np.allclose(t[0, :, 0], [0.0, 32 * w / 64, 63 * w / 64])
    assert np.allclose(t[0, :, 1], [0.0, 16 * h / 64, 63 * h / 64])
    assert np.allclose(t[0, :, 2], [d / 2, 0.0, d - 1])  # root depth -> middle bin; clipped to [0, D-1]

    batch = render_batch(TINY, seed=0, start=0, n=6)
    assert batch.images.shape == (6, 3, 64, 64) and batch.targets.shape == (6, 18, 3)
    assert 0 <= float(batch.images.min()) and float(batch.images.max()) <= 1
    tx, ty, tz = batch.targets.unbind(-1)
    assert float(tx.min()) >= 0 and float(tx.max()) <= w - 1 and float(ty.min()) >= 0 and float(ty.max()) <= h - 1
    assert float(tz.min()) >= 0 and float(tz.max()) <= d - 1
    assert torch.allclose(tz[:, 0], torch.full((6,), d / 2))  # the root joint has depth 0
    assert float(tz.std()) > 0.1  # other joints do not all sit at the root's depth


def test_a_few_training_steps_reduce_the_loss():
    schedule = Schedule(steps=40, batch_size=8, lr=3e-3, warmup_frac=0.1)
    before = evaluate_synthetic(_plain(TINY), n=40)
    model, report = train_reference(TINY, seed=0, schedule=schedule, progress=False, threads=1)
    after = evaluate_synthetic(model, n=40)
    assert report.steps == 40 and report.images_seen == 320 and report.low_res_steps == 0
    assert report.final_loss < report.initial_loss
    assert after.mean_px < before.mean_px
    assert 0 < after.median_max_prob <= 1


def test_trained_checkpoint_has_the_released_layout_and_loads(tmp_path):
    path = write_trained_checkpoint(TINY, tmp_path / "tiny.pth.tar", schedule=Schedule(steps=3, batch_size=4),
                                    eval_n=4, progress=False)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"epoch", "network", "optimizer", "synthetic"}
    assert all(k.startswith("module.") for k in raw["network"])
    assert len(raw["optimizer"]["state"]) == len(list(build_model(TINY).parameters()))
    assert raw["synthetic"]["kind"] == "trained-synthetic" and raw["synthetic"]["steps"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left behind
    loaded = load_checkpoint(path, TINY)
    assert loaded.synthetic["kind"] == "trained-synthetic"
    assert {"eval_mean_px", "eval_p99_px", "train_seconds"} <= set(loaded.synthetic)


def test_released_variant_checkpoint_loads_by_name(tmp_path):
    xs = spec_for("XS")
    path = write_trained_checkpoint(xs, tmp_path / "XS.pth.tar", schedule=Schedule(steps=1, batch_size=2),
                                    eval_n=2, progress=False)
    loaded = load_checkpoint(path, "XS")
    assert loaded.matched_variant == "XS" and loaded.synthetic["kind"] == "trained-synthetic"


def _plain(spec: ModelSpec) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights train_reference starts from (init="plain", seed 0)
    return build_model(spec)


def test_thread_tuner_keeps_the_faster_thread_count():
    from models.training.thread_tuner import ThreadTuner

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(max_threads=2, cycle=20, probe=2)
        chosen = []
        for step in range(20):
            tuner.before_step(step)
            chosen.append(torch.get_num_threads())
            tuner.after_step(0.1 if torch.get_num_threads() == 1 else 0.3)  # as on a busy machine
        assert chosen[:4] == [1, 1, 2, 2] and set(chosen[4:]) == {1}
        assert dict(tuner.summary()) == {1: 18, 2: 2}
    finally:
        torch.set_num_threads(before)


def test_training_leaves_the_callers_thread_count_as_it_was():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        train_reference(TINY, schedule=Schedule(steps=2, batch_size=2), threads=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
