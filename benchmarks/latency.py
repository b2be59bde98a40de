"""Latency measurement: warm-up, then a timed phase bounded by a minimum run count and time."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencySettings:
    warmup_runs: int = 10
    min_runs: int = 50
    min_seconds: float = 5.0
    max_seconds: float = 60.0  # stop a very slow backend after this, whatever the run count


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per inference (batch 1), like TFLite's benchmark_model and onnxruntime_perf_test."""

    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.mean_ms

    @classmethod
    def from_samples(cls, seconds: list[float]) -> "LatencyStats":
        ms = np.asarray(seconds) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(len(ms), float(ms.mean()), float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, float(ms.min()),
                   float(p50), float(p90), float(p99), float(ms.max()))

    def to_dict(self) -> dict:
        return {**asdict(self), "fps": self.fps}


def measure(run: Callable[[], object], settings: LatencySettings) -> LatencyStats:
    """Times `run()`; the caller prepares inputs outside so only inference is inside the clock."""
    for _ in range(settings.warmup_runs):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (len(samples) >= settings.min_runs and elapsed >= settings.min_seconds) or elapsed >= settings.max_seconds:
            break
    return LatencyStats.from_samples(samples)
