"""The CPU training loop: synthetic batches in, a ConvNeXtPose with real AdamW state out.

Recipe (the paper's where it fits): L1 on the soft-argmax coordinates, AdamW, linear warm-up
then cosine decay, ImageNet normalisation. Additions for minutes-long CPU runs, each in
``Schedule``: bf16 autocast + channels-last, progressive resizing, a fading auxiliary heatmap
loss, a folded logit scale, and a thread count chosen by measured step time. Throughout: the
blocks' depthwise convs in fp32 with a faster backward (``train_kernels``), both losses from one
softmax (``train_losses``) and images rendered in another process (``_Batches``).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from models.network import ConvNeXtPose, SoftArgmax3D
from models.preprocessing import normalise
from models.spec import ModelSpec
from models.synthetic.task import TRAIN, RenderedBatch, render_arrays
from models.synthetic.untrained import synthetic_model
from models.training.kernels import fast_depthwise
from models.training.losses import pose_losses
from models.training.schedule import Schedule
from models.training.thread_tuner import ThreadTuner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainReport:
    variant: str
    seed: int
    schedule: Schedule
    steps: int
    images_seen: int
    low_res_steps: int  # steps run at schedule.low_res_size
    wall_s: float
    initial_loss: float  # coordinate L1 over the first 10% of steps, output units (low-res steps in their own units)
    final_loss: float  # coordinate L1 over the last 10% of steps
    threads: int  # the most intra-op threads allowed
    thread_steps: tuple[tuple[int, int], ...]  # (threads, steps run with them): see ThreadTuner


class _Batches:
    """Renders batches in a separate process, ``ahead`` batches ahead of the training step.

    A process, not a thread, so rendering never holds the GIL the training thread needs to
    dispatch ops. Both cores are busy training, so rendering still costs time: measured on XS,
    0.216 -> 0.265 s per 256-px step and 0.125 -> 0.167 s per 128-px step.
    Each batch is a function of (seed, step), so the order is fixed and a step-mode run repeats.
    The input size follows the run's progress, which the consumer publishes via ``progress``.
    """

    def __init__(self, spec: ModelSpec, seed: int, schedule: Schedule, ahead: int = 3) -> None:
        self.progress = 0.0
        self._spec, self._seed, self._schedule, self._ahead = spec, seed, schedule, ahead
        # spawn: forking a process whose OpenMP pool is running is unsafe
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._pending: deque[tuple[ModelSpec, Future]] = deque()
        self._submitted = 0
        self._offset = 0  # images drawn so far: every image of the TRAIN split is used once

    def _submit(self) -> None:
        schedule = self._schedule
        # step mode: from the step index, so a run repeats exactly; time mode: the consumer's clock
        p = self._submitted / schedule.steps if schedule.seconds is None else self.progress
        stage = schedule.stage(self._spec, p)
        size = schedule.batch_for(stage, self._spec)
        self._pending.append((stage, self._pool.submit(render_arrays, stage, self._seed, self._offset, size, TRAIN,
                                                       schedule.task)))
        self._offset += size
        self._submitted += 1

    def __iter__(self) -> Iterator[tuple[ModelSpec, RenderedBatch]]:
        for _ in range(self._schedule.steps):
            while len(self._pending) < self._ahead and self._submitted < self._schedule.steps:
                self._submit()
            stage, future = self._pending.popleft()
            yield stage, future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def initial_model(spec: ModelSpec, seed: int, init: str) -> ConvNeXtPose:
    if init == "synthetic":
        return synthetic_model(spec, seed)
    torch.manual_seed(seed)
    return ConvNeXtPose(spec)


#: Rendering runs beside training on the same cores and adds to a step (docs/checkpoints.md); with it the estimate
#: for XS was 10.1 min against a 10.2-min run on the same 2-core machine.
RENDER_OVERHEAD = 1.4


def estimate_seconds(spec: ModelSpec, schedule: Schedule, threads: int = 2, timed_steps: int = 3) -> float:
    """Wall seconds a step-mode run of ``schedule`` will take here, from timing a few real training
    steps (random images, same autocast, layout and kernels) at each input size it trains at."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = initial_model(spec, 0, schedule.init).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    total = 0.0
    try:
        with fast_depthwise(model):
            low_res = schedule.stage(spec, 0.0)
            phases = [(low_res, round(schedule.steps * schedule.low_res_frac))] if low_res != spec else []
            phases.append((spec, schedule.steps - sum(n for _, n in phases)))
            for stage, steps in phases:
                batch, coords = schedule.batch_for(stage, spec), SoftArgmax3D(stage).coords
                images = torch.rand(batch, 3, stage.input_size, stage.input_size).contiguous(
                    memory_format=torch.channels_last)
                scale = torch.tensor(stage.heatmap_shape[::-1], dtype=torch.float32)
                targets = torch.rand(batch, spec.joints, 3) * scale
                times = []
                for _ in range(timed_steps + 1):  # the first step warms oneDNN up
                    t0 = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=schedule.bf16):
                        logits = model.heatmaps(normalise(images))
                    terms = pose_losses(logits, targets, coords, stage, schedule.aux_sigma, schedule.logit_scale)
                    optimizer.zero_grad(set_to_none=True)
                    (terms.coordinate + terms.heatmap).backward()
                    optimizer.step()
                    times.append(time.perf_counter() - t0)
                total += float(np.median(times[1:])) * steps
    finally:
        torch.set_num_threads(before)
    return total * RENDER_OVERHEAD


def train_model(
    spec: ModelSpec,
    seed: int,
    schedule: Schedule,
    threads: int = 2,
    adapt_threads: bool = True,
    log_every: int = 50,
    progress: bool = True,
) -> tuple[ConvNeXtPose, torch.optim.AdamW, TrainReport]:
    """Train from scratch; returns (model in eval mode, its optimizer, report).

    The caller's torch thread count is restored afterwards: the thread tuner changes it while
    training, and inference after training must not inherit that (float sums depend on it).
    """
    before = torch.get_num_threads()
    try:
        return _train(spec, seed, schedule, threads, adapt_threads, log_every, progress)
    finally:
        torch.set_num_threads(before)


def _train(spec: ModelSpec, seed: int, schedule: Schedule, threads: int, adapt_threads: bool, log_every: int,
           progress: bool) -> tuple[ConvNeXtPose, torch.optim.AdamW, TrainReport]:
    torch.set_num_threads(threads)
    tuner = ThreadTuner(threads) if adapt_threads else None
    model = initial_model(spec, seed, schedule.init).train()
    model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for the depthwise/pointwise convs
    # One parameter group over model.parameters(), as the official code: the state_dict then has the
    # released layout (state indexed 0..P-1).
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    coords = {spec.input_size: model.soft_argmax.coords}  # soft-argmax voxel tables, per input size
    losses: list[float] = []
    low_res_steps = step = images_seen = 0
    batches = _Batches(spec, seed, schedule)
    bar = tqdm(total=100, desc=f"train {spec.name}", unit="%", disable=not progress, mininterval=5)
    start = last = time.perf_counter()
    p = 0.0
    try:
        with fast_depthwise(model):
            for step, (stage, rendered) in enumerate(batches, 1):
                if stage.input_size not in coords:
                    coords[stage.input_size] = SoftArgmax3D(stage).coords
                low_res_steps += stage.input_size != spec.input_size
                images_seen += len(rendered.images)
                if tuner:
                    tuner.before_step(step - 1)
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr * schedule.lr_factor(schedule.progress(step, time.perf_counter() - start))
                batch = rendered.to_batch(torch.channels_last)
                images = normalise(batch.images).contiguous(memory_format=torch.channels_last)  # no copy: already so
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=schedule.bf16):
                    logits = model.heatmaps(images)
                terms = pose_losses(logits, batch.targets, coords[stage.input_size], stage, schedule.aux_sigma,
                                    schedule.logit_scale)
                aux = schedule.aux(p)
                total = terms.coordinate + aux * terms.heatmap if aux > 0 else terms.coordinate
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                losses.append(terms.coordinate.item())
                now = time.perf_counter()
                if tuner:  # the whole cycle, waiting for the renderer included: that is what threads trade off
                    tuner.after_step(now - last)
                last = now
                p = batches.progress = schedule.progress(step, now - start)
                bar.update(int(100 * p) - bar.n)
                if step % log_every == 0 or p >= 1:
                    log.info("%s step %d (%.0f%%) @%d px  loss %.4f  lr %.2e  aux %.2f  %.1f img/s  %.0f s  threads %d",
                             spec.name, step, 100 * p, stage.input_size, float(np.mean(losses[-log_every:])),
                             optimizer.param_groups[0]["lr"], aux, images_seen / (now - start),
                             now - start, torch.get_num_threads())
                if p >= 1:
                    break
    finally:
        batches.close()
        bar.close()
    wall = time.perf_counter() - start
    tail = max(1, len(losses) // 10)
    report = TrainReport(
        variant=spec.name, seed=seed, schedule=schedule, steps=step, images_seen=images_seen,
        low_res_steps=low_res_steps, wall_s=wall, initial_loss=float(np.mean(losses[:tail])),
        final_loss=float(np.mean(losses[-tail:])), threads=threads,
        thread_steps=tuner.summary() if tuner else ((threads, step),),
    )
    model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # fold the training-time logit scale into the final layer
        model.head.final_layer.weight.mul_(schedule.logit_scale)
        model.head.final_layer.bias.mul_(schedule.logit_scale)
    return model.eval(), optimizer, report
