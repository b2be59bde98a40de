"""The decoder an app copies: the network's units back to the photo and to millimetres, checked against
the synthetic task's own ground truth (pixels in the crop, depth relative to the root)."""

from __future__ import annotations

import numpy as np
import pytest

from models.decode import decode
from models.spec import spec_for
from models.synthetic.task import EVAL, render_sample, targets


@pytest.mark.parametrize("variant", ["S", "M"])
def test_decoding_targets_gives_back_the_ground_truth(variant):
    spec = spec_for(variant)
    sample = render_sample(seed=5, index=3, size=spec.input_size, split=EVAL, heatmap_size=spec.heatmap_size)
    out = targets(sample.joints_px, sample.depth_mm, spec)  # what a perfect network outputs
    pose = decode(out[None], box=(0, 0, spec.input_size, spec.input_size), heatmap_dhw=spec.heatmap_shape)
    assert np.allclose(pose.xy, sample.joints_px, atol=1e-3)
    inside = np.abs(sample.depth_mm) < 1000 * (spec.depth_bins - 1) / spec.depth_bins  # not clipped to the bins
    assert np.allclose(pose.depth_mm[inside], sample.depth_mm[inside], atol=1e-2)


def test_the_box_places_the_crop_in_the_photo():
    spec = spec_for("S")
    d, h, w = spec.heatmap_shape
    joints = np.array([[0.0, 0.0, d / 2], [w, h, 0.0], [w / 2, h / 4, d]])
    pose = decode(joints, box=(100.0, 40.0, 512.0, 300.0), heatmap_dhw=spec.heatmap_shape)
    assert pose.xy.tolist() == [[100.0, 40.0], [612.0, 340.0], [356.0, 115.0]]
    assert pose.depth_mm.tolist() == [0.0, -1000.0, 1000.0]  # the middle bin is the root's depth
