"""How sure a p99 difference between two backends is: a paired bootstrap over images.

A p99 over 18 joints x 100 images rests on its ~18 largest errors, a few images' worth: on the S
reference weights, int8-w8a8-mixed was 0.33 px above ONNX Runtime int8 on the first 100 synthetic
evaluation images and 0.20 px below it on 400 (measured), so a difference between two rows means
something only with its interval. Images are resampled with all their joints (the joints of one
image err together), the same images for both backends (paired).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from judging.parity import input_px_errors
from models.spec import ModelSpec

#: The integer row every other integer row is compared with: ONNX Runtime's own static int8.
PEER = ("onnx", "int8-qdq")
RESAMPLES = 2000


@dataclass(frozen=True)
class P99Difference:
    """p99(candidate) - p99(peer) of the 2-D joint error vs the reference, input px, with its 95 % interval."""

    delta_input_px: float
    low_input_px: float
    high_input_px: float
    n_images: int
    resamples: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.delta_input_px:+.2f} px (95 % interval {self.low_input_px:+.2f} to {self.high_input_px:+.2f}, "
                f"{self.n_images} images)")


def p99_difference(candidate: np.ndarray, peer: np.ndarray, reference: np.ndarray, spec: ModelSpec,
                   resamples: int = RESAMPLES, seed: int = 0) -> P99Difference:
    """Joints (N, J, 3) of two backends on the same N images against the reference joints."""
    if not candidate.shape == peer.shape == reference.shape:
        raise ValueError(f"joints of shapes {candidate.shape}, {peer.shape} and {reference.shape} are not of the "
                         "same images")
    a, b = input_px_errors(candidate, reference, spec), input_px_errors(peer, reference, spec)
    n = len(a)
    rows = np.random.default_rng(seed).integers(0, n, (resamples, n))
    deltas = np.percentile(a[rows].reshape(resamples, -1), 99, axis=1) - np.percentile(
        b[rows].reshape(resamples, -1), 99, axis=1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return P99Difference(float(np.percentile(a, 99) - np.percentile(b, 99)), float(low), float(high), n, resamples)
