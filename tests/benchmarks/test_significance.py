"""The paired bootstrap behind the bench's `p99 vs ONNX Runtime int8`."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.significance import p99_difference
from models.spec import REGISTRY

SPEC = REGISTRY["XS"]
TO_INPUT = SPEC.input_size / SPEC.heatmap_size


def _joints(n: int, seed: int, noise_px: float, reference: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = reference if reference is not None else rng.uniform(0, SPEC.heatmap_size, (n, 18, 3))
    return base + rng.normal(0, noise_px, base.shape) if noise_px else base.copy()


def test_the_same_joints_differ_by_nothing_with_certainty():
    ref = _joints(50, 0, 0)
    peer = _joints(50, 1, 0.05, ref)
    d = p99_difference(peer, peer.copy(), ref, SPEC)
    assert (d.delta_input_px, d.low_input_px, d.high_input_px) == (0, 0, 0)
    assert d.n_images == 50


def test_a_clearly_worse_backend_has_an_interval_above_zero_and_its_p99_in_input_px():
    ref = _joints(100, 0, 0)
    peer, worse = _joints(100, 1, 0.05, ref), _joints(100, 2, 0.5, ref)
    d = p99_difference(worse, peer, ref, SPEC)
    err = lambda j: np.percentile(np.linalg.norm((j - ref)[..., :2], axis=-1) * TO_INPUT, 99)  # noqa: E731
    assert d.delta_input_px == pytest.approx(err(worse) - err(peer))
    assert 0 < d.low_input_px < d.delta_input_px < d.high_input_px
    assert p99_difference(peer, worse, ref, SPEC).high_input_px < 0  # and the other way round


def test_two_backends_of_the_same_accuracy_get_an_interval_around_zero():
    ref = _joints(100, 0, 0)
    d = p99_difference(_joints(100, 1, 0.2, ref), _joints(100, 2, 0.2, ref), ref, SPEC)
    assert d.low_input_px < 0 < d.high_input_px


def test_joints_of_different_images_are_refused():
    ref = _joints(10, 0, 0)
    with pytest.raises(ValueError, match="not of the same images"):
        p99_difference(ref[:9], ref, ref, SPEC)


def test_the_bench_compares_every_other_integer_row_with_onnx_runtime_int8_on_its_judged_images():
    from benchmarks.run import _compare_with_peer

    ref = _joints(40, 0, 0)
    outputs = {"ort-int8": _joints(40, 1, 0.05, ref), "tflite-mixed": _joints(40, 2, 0.5, ref)}
    rows = [{"backend": name} for name in ("ort-int8", "tflite-mixed", "tflite-fp32")]
    judged = np.arange(40) >= 10  # the first ten were calibration images
    _compare_with_peer(rows, "ort-int8", outputs, judged, ref, SPEC)
    assert [("p99_vs_onnx_int8" in r) for r in rows] == [False, True, False]
    compared = rows[1]["p99_vs_onnx_int8"]
    assert compared["n_images"] == 30 and compared["low_input_px"] > 0
