"""What an opened artifact offers: one prediction function, the label of what runs it, and the I/O names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.contract import INPUT_NAME, OUTPUT_NAME

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "Predict", "Session", "Tensors", "to_layout"]

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Session:
    """An opened artifact. ``predict`` takes one NCHW float32 image (1, 3, S, S) and returns its
    joints (1, J, 3); the artifact's own layout is applied inside."""

    predict: Predict
    runtime: str  # what really runs, e.g. "ai-edge-litert 2.3.0 (XNNPACK)"
    timed: bool = True  # False: its latency says nothing about the target (the Core ML reference evaluator)
    note: str = ""
    #: N images at once, where handing them over one by one is what costs (an emulated CPU's process);
    #: each is still run alone (batch 1), as an app would
    batch: Predict | None = None

    def run_all(self, inputs_nchw: np.ndarray) -> np.ndarray:
        """Joints (N, J, 3) for N images, fed one at a time as an app would."""
        if self.batch is not None:
            return self.batch(np.ascontiguousarray(inputs_nchw, dtype=np.float32))
        return np.concatenate([self.predict(np.ascontiguousarray(x[None], dtype=np.float32)) for x in inputs_nchw])


#: Every float tensor a runtime computed for one input, in execution order: (name, values).
Tensors = list[tuple[str, np.ndarray]]


def to_layout(x_nchw: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHW":
        return x_nchw
    if layout == "NHWC":
        return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    raise ValueError(f"unknown layout {layout!r}")
