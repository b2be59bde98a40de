"""Training schedules for the synthetic pose task: what to run, and how far along a run is.

A run's progress p in [0, 1] drives the learning rate, the input size and the auxiliary loss
weight. In step mode p = step / steps (bit-for-bit repeatable at a fixed thread count); in time
mode p = elapsed / seconds, so a run fits a wall-clock budget on a machine whose load changes,
at the price of a step count that depends on that load.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from models.spec import ModelSpec
from models.synthetic.task import DEFAULT_TASK, TaskConfig


@dataclass(frozen=True)
class Schedule:
    steps: int  # step mode: the run's length; time mode: an upper bound
    batch_size: int
    seconds: float | None = None  # set: time mode
    lr: float = 2e-3
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.01  # cosine ends at lr * this
    weight_decay: float = 0.01
    init: str = "plain"  # "plain" (torch default init) or "synthetic" (models.synthetic.synthetic_model)
    # bf16 autocast for the network body (AMX/AVX-512 make it ~5x faster than fp32 on this CPU);
    # the soft-argmax and the losses stay fp32, weights are fp32 throughout.
    bf16: bool = True
    # Auxiliary heatmap term (models.training.losses), weight going linearly from ``aux_weight`` to
    # ``aux_end_weight``. From scratch, the soft-argmax L1 alone learns through spread heatmaps
    # whose mean shrinks toward the body; the dense term sharpens them.
    aux_weight: float = 0.0
    aux_end_weight: float = 0.0
    aux_sigma: float = 1.0  # heatmap px / depth bins
    # Progressive resizing: while p < ``low_res_frac`` inputs are ``low_res_size`` px (the network is
    # fully convolutional: heatmap H, W shrink, D stays), ~2x more images per second at 128.
    low_res_frac: float = 0.0
    low_res_size: int = 128
    # Batch size at the full input size (None: ``batch_size``). Smaller full-size batches give more
    # updates for the same images in the phase that costs ~4x more per image.
    full_res_batch_size: int | None = None
    # Final-layer reparametrisation: logits = logit_scale * (W x + b) in training, folded into W and
    # b at the end (same architecture, same file). It multiplies that layer's effective step size,
    # so peaked heatmaps -- logits spanning ~10 -- are reachable in hundreds of steps.
    logit_scale: float = 1.0
    task: TaskConfig = DEFAULT_TASK

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"schedule needs steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"schedule seconds must be positive, got {self.seconds}")
        if self.init not in ("plain", "synthetic"):
            raise ValueError(f"unknown init {self.init!r}; use 'plain' or 'synthetic'")

    def progress(self, steps_done: int, elapsed_s: float) -> float:
        """p in [0, 1] after ``steps_done`` steps and ``elapsed_s`` seconds."""
        p = elapsed_s / self.seconds if self.seconds else steps_done / self.steps
        return min(1.0, p)

    def lr_factor(self, p: float) -> float:
        """Linear warm-up, then cosine decay to ``final_lr_frac``."""
        if p < self.warmup_frac:
            return max(p / self.warmup_frac, 0.01)
        t = (p - self.warmup_frac) / max(1e-9, 1 - self.warmup_frac)
        return self.final_lr_frac + (1 - self.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def aux(self, p: float) -> float:
        return self.aux_weight + (self.aux_end_weight - self.aux_weight) * p

    def batch_for(self, stage: ModelSpec, spec: ModelSpec) -> int:
        return (self.full_res_batch_size or self.batch_size) if stage.input_size == spec.input_size else self.batch_size

    def stage(self, spec: ModelSpec, p: float) -> ModelSpec:
        """The spec whose input size a step at progress p trains at."""
        if p < self.low_res_frac and self.low_res_size < spec.input_size:
            return dataclasses.replace(spec, input_size=self.low_res_size)
        return spec


_RECIPE = dict(lr=2e-3, aux_weight=1.0, aux_end_weight=1.0, aux_sigma=0.75, logit_scale=5.0)
#: Full schedules, in step mode (repeatable): N1 steps of 16 images at 128 px, then N2 steps of 8 at
#: 256 px, sized from measured in-loop step times on the idle 2-core machine, rendering included
#: (XS 0.178 / 0.292 s, S 0.27 / 0.43 s per step at 128 / 256 px), to ~13.5 min, so training +
#: evaluation + writing fit 15 min.
FULL_SCHEDULES: dict[str, Schedule] = {
    "XS": Schedule(steps=800 + 2300, batch_size=16, full_res_batch_size=8, low_res_frac=800 / 3100, **_RECIPE),
    "S": Schedule(steps=400 + 1700, batch_size=16, full_res_batch_size=8, low_res_frac=400 / 2100, **_RECIPE),
}
#: For CI: 300 steps (250 at 128 px, 50 at the full size), ~1.5 min for XS on 2 cores. Not converged
#: (XS: 2.6 px mean), but heatmaps are already single-peaked enough to judge int8 conversions on.
SHORT_SCHEDULE = Schedule(steps=300, batch_size=16, low_res_frac=250 / 300, **_RECIPE)


def schedule_for(spec: ModelSpec, short: bool = False) -> Schedule:
    """The variant's full schedule (unknown variants get S's), or the CI one."""
    if short:
        return SHORT_SCHEDULE
    return FULL_SCHEDULES.get(spec.name, FULL_SCHEDULES["S"])


def resolve(
    spec: ModelSpec, schedule: Schedule | None = None, steps: int | None = None, budget_s: float | None = None,
    short: bool = False,
) -> Schedule:
    """``schedule`` (default: ``schedule_for``), switched to step mode by ``steps`` or to time mode by ``budget_s``."""
    schedule = schedule or schedule_for(spec, short)
    if steps is not None:
        schedule = dataclasses.replace(schedule, steps=steps, seconds=None)
    if budget_s is not None:
        schedule = dataclasses.replace(schedule, seconds=budget_s, steps=steps or max(schedule.steps, 100_000))
    return schedule
