"""The cost's 95 % interval: a bootstrap over images that says whether a p99 is within, over or borderline."""

from __future__ import annotations

import numpy as np
import pytest

from judging.gates import BORDERLINE, OVER, WITHIN, CostInterval, cost_interval, kind_label, small_sample_factor


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
    assert few.widened_by == small_sample_factor(10) > many.widened_by == small_sample_factor(160) > 1.0


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
    widen = small_sample_factor(10)
    assert (interval.low_input_px, interval.high_input_px) == pytest.approx((1.0 / widen, 50.0 * widen))


def test_crops_of_one_photo_are_resampled_together_and_few_photos_give_a_wide_interval():
    """Four photos with five crops each: counted as 20 independent images the interval is narrower than the
    four photos allow, and a budget inside it is "borderline: 4 photos"."""
    errors = _errors(20, 5)
    photos = np.repeat([f"photo:{i}" for i in range(4)], 5)
    as_images, as_photos = cost_interval(errors), cost_interval(errors, photos)
    assert (as_photos.units, as_photos.unit, as_images.units, as_images.unit) == (4, "photos", 20, "images")
    assert as_photos.high_input_px - as_photos.low_input_px > as_images.high_input_px - as_images.low_input_px
    budget = float(np.percentile(errors, 99))
    assert as_photos.kind(budget) == BORDERLINE
    record = {"cost_verdict": BORDERLINE, "cost_interval": as_photos.__dict__}
    assert kind_label(record) == "borderline: 4 photos"
    assert kind_label({**record, "cost_interval": as_images.__dict__}) == "borderline"


def test_the_small_sample_widening_covers_the_p99_of_a_larger_set():
    """The rule the widening was measured for (judging/gates.SMALL_SAMPLE_C): intervals from 8 of 400 images
    hold the 400 images' p99 in >= 90 % of draws (the plain bootstrap: about 60 %)."""
    population = _errors(400, 9)
    p99 = np.percentile(population, 99)
    rng = np.random.default_rng(0)
    held = [cost_interval(population[rng.choice(400, 8, replace=False)], resamples=500) for _ in range(100)]
    covered = np.mean([i.low_input_px <= p99 <= i.high_input_px for i in held])
    plain = np.mean([i.low_input_px * i.widened_by <= p99 <= i.high_input_px / i.widened_by for i in held])
    assert covered >= 0.9 and plain < covered
