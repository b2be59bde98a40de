"""Pick the intra-op thread count by measured step time while a CPU shared with other jobs changes load.

On this 2-core machine, 2 threads train ~1.7x faster than 1 when the machine is idle, but 2-3x
SLOWER when another process also uses a core: OpenMP workers wait at barriers for a thread the
scheduler has parked. Load comes and goes, so the choice is re-measured every cycle.
"""

from __future__ import annotations

import statistics
from collections import Counter

import torch


class ThreadTuner:
    """Each ``cycle`` steps: ``probe`` steps with 1 thread, ``probe`` with ``max_threads``, then the faster."""

    def __init__(self, max_threads: int, cycle: int = 150, probe: int = 4) -> None:
        self.max_threads = max_threads
        self.cycle, self.probe = cycle, probe
        self.choice = max_threads
        self.used: Counter[int] = Counter()
        self._times: dict[int, list[float]] = {}
        self._threads = max_threads

    def before_step(self, step: int) -> None:
        """Set the thread count for 0-based ``step``."""
        if self.max_threads <= 1:
            threads = self.max_threads
        else:
            pos = step % self.cycle
            if pos == 0:
                self._times = {1: [], self.max_threads: []}
            if pos < self.probe:
                threads = 1
            elif pos < 2 * self.probe:
                threads = self.max_threads
            else:
                if pos == 2 * self.probe and all(self._times.values()):
                    self.choice = min(self._times, key=lambda t: statistics.median(self._times[t]))
                threads = self.choice
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self._threads = threads

    def after_step(self, seconds: float) -> None:
        self.used[self._threads] += 1
        if self._threads in self._times:
            self._times[self._threads].append(seconds)

    def summary(self) -> tuple[tuple[int, int], ...]:
        """((threads, steps run with them), ...)."""
        return tuple(sorted(self.used.items()))
