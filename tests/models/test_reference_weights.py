"""The trained reference weights are built once and then read from the cache; the CLI reports their figures."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import models.training.reference as trained_checkpoint
from cli import main
from models.checkpoint import load_checkpoint
from models.spec import ModelSpec
from models.training.reference import reference_checkpoint, schedule_digest
from models.training.schedule import SHORT_SCHEDULE

TINY = ModelSpec("tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                 depth_bins=8, joints=18, input_size=64)


@pytest.mark.slow
def test_reference_weights_are_trained_once_then_cached(tmp_path, monkeypatch):
    first = reference_checkpoint(TINY, seed=0, short=True, cache_dir=tmp_path, progress=False)
    raw = torch.load(first, weights_only=True)
    assert raw["synthetic"]["kind"] == "trained-synthetic" and raw["synthetic"]["steps"] == SHORT_SCHEDULE.steps
    assert load_checkpoint(first, TINY).synthetic["eval_n"] == 200

    def no_training(*args, **kwargs):
        raise AssertionError("the cached file should have been reused")

    monkeypatch.setattr(trained_checkpoint, "write_trained_checkpoint", no_training)
    stamp = first.stat().st_mtime_ns
    assert reference_checkpoint(TINY, seed=0, short=True, cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="cached file"):  # another seed is another file
        reference_checkpoint(TINY, seed=1, short=True, cache_dir=tmp_path)


def test_the_cache_key_changes_with_the_recipe_the_spec_and_the_seed():
    base = schedule_digest(TINY, SHORT_SCHEDULE, 0)
    assert base == schedule_digest(TINY, dataclasses.replace(SHORT_SCHEDULE), 0)
    assert base != schedule_digest(TINY, dataclasses.replace(SHORT_SCHEDULE, lr=1e-3), 0)
    assert base != schedule_digest(dataclasses.replace(TINY, joints=21), SHORT_SCHEDULE, 0)
    assert base != schedule_digest(TINY, SHORT_SCHEDULE, 1)


def test_eval_synthetic_prints_the_error_figures(make_ckpt, tmp_path, capsys):
    report = tmp_path / "eval.json"
    assert main(["eval-synthetic", str(make_ckpt("XS")), "--n", "4", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "4 fresh synthetic images" in out and "mean" in out and "p99" in out and "median per-joint max prob" in out
    import json

    figures = json.loads(report.read_text())
    assert figures["n"] == 4 and figures["mean_px"] > 0 and 0 < figures["median_max_prob"] <= 1


def test_make_checkpoint_refuses_flags_that_do_not_go_together(tmp_path, capsys):
    assert main(["make-checkpoint", "XS", str(tmp_path / "a.pth.tar"), "--short"]) == 2
    assert "--short is a training schedule" in capsys.readouterr().err
    assert main(["make-checkpoint", "XS", str(tmp_path / "a.pth.tar"), "--trained", "--legacy-head-keys"]) == 2
    assert not list(tmp_path.iterdir())
