"""The cost's 95 % interval: a bootstrap over images that says whether a p99 is within, over or borderline."""

from __future__ import annotations

import numpy as np
import pytest

from judging.gates import BORDERLINE, OVER, WITHIN, CostInterval, cost_interval


def _errors(images: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """2-D joint errors like an int8 file's: mostly small, a heavy tail of a few joints per image."""
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 0.25 * scale, (images, 18)) + (rng.random((images, 18)) < 0.02) * rng.gamma(
        3.0, 0.8 * scale, (images, 18))


def test_the_interval_holds_the_p99_and_narrows_with_more_images():
    few, many = cost_interval(_errors(10, 0)), cost_interval(_errors(160, 0))
    for interval, errors in ((few, _errors(10, 0)), (many, _errors(160, 0))):
        p99 = np.percentile(errors, 99)
        assert interval.low_input_px <= p99 <= interval.high_input_px
    assert (many.high_input_px - many.low_input_px) < 0.6 * (few.high_input_px - few.low_input_px)
    assert (few.images, few.joints, many.images) == (10, 18, 160)


def test_one_set_of_errors_always_gets_one_interval():
    errors = _errors(10, 3)
    assert cost_interval(errors) == cost_interval(errors.copy())


def test_the_kind_is_where_the_interval_lies_against_the_budget():
    interval = CostInterval(1.2, 3.8, 10, 18)
    assert [interval.kind(b) for b in (4.0, 3.8, 2.0, 1.1)] == [WITHIN, WITHIN, BORDERLINE, OVER]


def test_images_are_resampled_whole():
    # every large error in one image: a resample holds that image (p99 = 50, its joints are 10 % of them all)
    # or not (p99 = 1) -- about a third of the resamples miss it, so the interval spans both
    errors = np.full((10, 18), 1.0)
    errors[0] = 50.0
    interval = cost_interval(errors)
    assert (interval.low_input_px, interval.high_input_px) == pytest.approx((1.0, 50.0))
