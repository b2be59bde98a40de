"""Train a ConvNeXtPose on the synthetic figure task (CPU), evaluate it, write a released-layout file.

Why: released checkpoints cannot be downloaded here, and untrained weights have multi-modal
heatmaps that exaggerate quantisation error. A network that really localises joints -- even
on synthetic figures -- gives honest fp16/int8 parity figures.

Recipe (as in the paper where it fits): L1 loss on the soft-argmax coordinates (x, y in
heatmap px, z in depth bins), AdamW, linear warm-up then cosine decay, ImageNet normalisation.
Training is step-based, so one call with the same seed and schedule repeats the same run
(up to float summation order across thread counts); ``budget_s`` is only a safety stop.

    python -m models.train --variant XS --out /tmp/train/XS.pth.tar --sample /tmp/train/sample_XS.png
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from models.network import ConvNeXtPose, SoftArgmax3D
from models.thread_tuner import ThreadTuner
from models.spec import ModelSpec, spec_for
from models.synthetic import normalise, optimizer_state, save_atomic, synthetic_model
from models.synthetic_task import DEFAULT_TASK, EVAL, TRAIN, Batch, TaskConfig, draw_skeletons, render_batch, render_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    lr: float = 2e-3
    warmup_frac: float = 0.05
    final_lr_frac: float = 0.01  # cosine ends at lr * this
    weight_decay: float = 0.01
    init: str = "plain"  # "plain" (torch default init) or "synthetic" (models.synthetic.synthetic_model)
    # bf16 autocast for the network body (AMX/AVX-512 make it ~5x faster than fp32 on this CPU);
    # the soft-argmax and the loss stay fp32, weights are fp32 throughout.
    bf16: bool = True
    # Auxiliary heatmap term: cross-entropy of the xy and z marginals against Gaussians (sigma
    # ``aux_sigma`` heatmap px) at the target, weight going linearly from ``aux_weight`` to
    # ``aux_end_weight``. From scratch, the soft-argmax L1 alone gives weak gradients through
    # spread heatmaps (slow start, multi-modal maps); the dense term gets a unimodal peak quickly.
    aux_weight: float = 0.0
    aux_end_weight: float = 0.0
    aux_sigma: float = 1.0
    # Progressive resizing: the first ``low_res_frac`` of the steps use ``low_res_size`` inputs
    # (the network is fully convolutional; heatmap H, W shrink, D stays). ~4x cheaper per image
    # at 128; the rest of the run, at the spec's own input size, adapts to the released scale.
    low_res_frac: float = 0.0
    low_res_size: int = 128
    task: TaskConfig = DEFAULT_TASK
    # Final-layer reparametrisation: logits = logit_scale * (W x + b) in training, folded into W and b
    # at the end (same architecture, same file). It multiplies that layer's effective step size, so
    # peaked heatmaps -- logits spanning ~10 -- are reachable in hundreds of steps, not thousands.
    logit_scale: float = 1.0
    zero_init_head: bool = False  # start from uniform heatmaps (every joint at the volume centre)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"schedule needs steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")


#: Full schedules, sized to finish in <= 15 min on 2 shared cores (see the module docstring).
FULL_SCHEDULES: dict[str, Schedule] = {
    "XS": Schedule(steps=1500, batch_size=12),
    "S": Schedule(steps=900, batch_size=12),
}
#: For CI: a couple of minutes at most; the model moves but does not converge.
SHORT_SCHEDULE = Schedule(steps=40, batch_size=8)


@dataclass(frozen=True)
class TrainReport:
    variant: str
    seed: int
    schedule: Schedule
    steps: int  # steps actually run (< schedule.steps only if the time budget stopped it)
    images_seen: int
    wall_s: float
    initial_loss: float  # mean L1 over the first 10% of steps, output units
    final_loss: float  # mean L1 over the last 10% of steps
    stopped_early: bool
    threads: int  # the most intra-op threads allowed
    thread_steps: tuple[tuple[int, int], ...]  # (threads, steps run with them): see ThreadTuner


@dataclass(frozen=True)
class EvalReport:
    n: int
    seed: int
    mean_px: float  # mean 2D joint error, heatmap px
    p99_px: float  # 99th percentile of the per-joint 2D error, heatmap px
    median_max_prob: float  # median over joints of the largest voxel probability (1 = one-hot)
    mean_depth_bins: float  # mean |z error|, depth bins


def schedule_for(spec: ModelSpec, short: bool = False) -> Schedule:
    if short:
        return SHORT_SCHEDULE
    return FULL_SCHEDULES.get(spec.name, FULL_SCHEDULES["S"])


def _lr_factor(step: int, schedule: Schedule) -> float:
    warmup = max(1, int(schedule.steps * schedule.warmup_frac))
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, schedule.steps - warmup)
    return schedule.final_lr_frac + (1 - schedule.final_lr_frac) * 0.5 * (1 + math.cos(math.pi * t))


def _aux_weight(step: int, schedule: Schedule) -> float:
    t = step / max(1, schedule.steps - 1)
    return schedule.aux_weight + (schedule.aux_end_weight - schedule.aux_weight) * t


def _gaussian(centres: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(..., size) normalised 1-D Gaussians centred at ``centres`` (...)."""
    grid = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-0.5 * ((grid - centres[..., None]) / sigma) ** 2)
    return g / g.sum(-1, keepdim=True).clamp_min(1e-12)


def heatmap_aux_loss(logits: torch.Tensor, target: torch.Tensor, spec: ModelSpec, sigma: float) -> torch.Tensor:
    """Cross-entropy of the 3D softmax's xy and z marginals against Gaussians at ``target`` (N, J, 3)."""
    d, h, w = spec.heatmap_shape
    n = logits.shape[0]
    logp = torch.log_softmax(logits.reshape(n, spec.joints, -1), dim=2).reshape(n, spec.joints, d, h, w)
    logp_xy = torch.logsumexp(logp, dim=2)  # (N, J, H, W)
    logp_z = torch.logsumexp(logp.flatten(3), dim=3)  # (N, J, D)
    gx, gy, gz = (_gaussian(target[..., i], size, sigma) for i, size in enumerate((w, h, d)))
    xy = -(gy[..., :, None] * gx[..., None, :] * logp_xy).sum((2, 3))
    z = -(gz * logp_z).sum(2)
    return (xy + z).mean()


def _stage_spec(spec: ModelSpec, step: int, schedule: Schedule) -> ModelSpec:
    """The spec whose input size this step trains at (progressive resizing)."""
    if step < schedule.low_res_frac * schedule.steps and schedule.low_res_size < spec.input_size:
        return dataclasses.replace(spec, input_size=schedule.low_res_size)
    return spec


def _batches(spec: ModelSpec, seed: int, schedule: Schedule) -> Iterator[tuple[ModelSpec, Batch]]:
    """Render batches in a thread, two ahead: PIL and numpy release the GIL for much of it."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    steps, batch_size = schedule.steps, schedule.batch_size

    def produce() -> None:
        for step in range(steps):
            if stop.is_set():
                return
            stage = _stage_spec(spec, step, schedule)
            q.put((stage, render_batch(stage, seed, step * batch_size, batch_size, TRAIN, schedule.task)))

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        for _ in range(steps):
            yield q.get()
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.1)


def _initial_model(spec: ModelSpec, seed: int, init: str) -> ConvNeXtPose:
    if init == "synthetic":
        return synthetic_model(spec, seed)
    if init != "plain":
        raise ValueError(f"unknown init {init!r}; use 'plain' or 'synthetic'")
    torch.manual_seed(seed)
    return ConvNeXtPose(spec)


def _train(
    spec: ModelSpec, seed: int, schedule: Schedule, budget_s: float | None, log_every: int, threads: int, progress: bool,
    adapt_threads: bool = True,
) -> tuple[ConvNeXtPose, torch.optim.AdamW, TrainReport]:
    torch.set_num_threads(threads)
    tuner = ThreadTuner(threads, cycle=150) if adapt_threads else None
    model = _initial_model(spec, seed, schedule.init).train()
    if schedule.zero_init_head:
        with torch.no_grad():
            model.head.final_layer.weight.zero_()
            model.head.final_layer.bias.zero_()
    model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for the depthwise/pointwise convs
    # One parameter group over model.parameters(), as the official code: the state_dict then
    # has the released layout (state indexed 0..P-1).
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, schedule))
    losses: list[float] = []
    start = time.perf_counter()
    stopped_early = False
    bar = tqdm(_batches(spec, seed, schedule), total=schedule.steps, desc=f"train {spec.name}",
               disable=not progress, mininterval=5)
    soft_argmax = {spec.input_size: model.soft_argmax}
    step = 0
    for step, (stage, batch) in enumerate(bar, 1):
        if stage.input_size not in soft_argmax:
            soft_argmax[stage.input_size] = SoftArgmax3D(stage)
        if tuner:
            tuner.before_step(step - 1)
        t0 = time.perf_counter()
        images = normalise(batch.images).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=schedule.bf16):
            logits = model.heatmaps(images)
        logits = logits.float() * schedule.logit_scale
        pred = soft_argmax[stage.input_size](logits)  # fp32: bf16 would round coordinates to ~0.1 px
        loss = (pred - batch.targets).abs().mean()
        aux = _aux_weight(step - 1, schedule)
        if aux > 0:
            loss_total = loss + aux * heatmap_aux_loss(logits, batch.targets, stage, schedule.aux_sigma)
        else:
            loss_total = loss
        optimizer.zero_grad(set_to_none=True)
        loss_total.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if tuner:
            tuner.after_step(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if step % log_every == 0 or step == schedule.steps:
            recent = float(np.mean(losses[-log_every:]))
            bar.set_postfix(loss=f"{recent:.3f}")
            log.info("%s step %d/%d @%d px  loss %.4f  lr %.2e  aux %.2f  %.1f img/s  %.0f s  threads %d", spec.name,
                     step, schedule.steps, stage.input_size, recent, scheduler.get_last_lr()[0], aux,
                     step * schedule.batch_size / elapsed, elapsed, torch.get_num_threads())
        if budget_s is not None and elapsed > budget_s and step < schedule.steps:
            log.warning("%s: time budget %.0f s reached at step %d of %d -- stopping early (LR not annealed)",
                        spec.name, budget_s, step, schedule.steps)
            stopped_early = True
            break
    bar.close()
    wall = time.perf_counter() - start
    tail = max(1, len(losses) // 10)
    report = TrainReport(
        variant=spec.name, seed=seed, schedule=schedule, steps=step, images_seen=step * schedule.batch_size,
        wall_s=wall, initial_loss=float(np.mean(losses[:tail])), final_loss=float(np.mean(losses[-tail:])),
        stopped_early=stopped_early, threads=threads,
        thread_steps=tuner.summary() if tuner else ((threads, step),),
    )
    model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():  # fold the training-time logit scale into the final layer
        model.head.final_layer.weight.mul_(schedule.logit_scale)
        model.head.final_layer.bias.mul_(schedule.logit_scale)
    return model.eval(), optimizer, report


def train_reference(
    spec: ModelSpec,
    seed: int = 0,
    schedule: Schedule | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    log_every: int = 50,
    threads: int = 2,
    short: bool = False,
    progress: bool = True,
) -> tuple[ConvNeXtPose, TrainReport]:
    """Train ``spec`` from scratch on the synthetic task; returns (model in eval mode, report).

    ``schedule`` defaults to the variant's full schedule (``short=True``: the CI one); ``steps``
    overrides its length (the LR schedule stretches with it).
    """
    model, _, report = _train(spec, seed, _resolve(spec, schedule, steps, short), budget_s, log_every, threads, progress)
    return model, report


def _resolve(spec: ModelSpec, schedule: Schedule | None, steps: int | None, short: bool) -> Schedule:
    schedule = schedule or schedule_for(spec, short)
    return dataclasses.replace(schedule, steps=steps) if steps else schedule


@torch.no_grad()
def predict(model: ConvNeXtPose, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(joints (N, J, 3) in output units, per-joint max voxel probability (N, J))."""
    logits = model.heatmaps(normalise(images))
    probs = torch.softmax(logits.reshape(len(images), model.spec.joints, -1), dim=2)
    return model.soft_argmax(logits), probs.amax(dim=2)


def evaluate_synthetic(
    model: ConvNeXtPose, n: int = 200, seed: int = 0, batch_size: int = 20, task: TaskConfig = DEFAULT_TASK
) -> EvalReport:
    """Errors on ``n`` fresh images of the evaluation split (never seen in training)."""
    model.eval()
    errors, depth_errors, max_probs = [], [], []
    for start in range(0, n, batch_size):
        batch = render_batch(model.spec, seed, start, min(batch_size, n - start), EVAL, task)
        joints, max_prob = predict(model, batch.images)
        diff = joints - batch.targets
        errors.append(diff[..., :2].norm(dim=-1).flatten())
        depth_errors.append(diff[..., 2].abs().flatten())
        max_probs.append(max_prob.flatten())
    err = torch.cat(errors)
    return EvalReport(
        n=n, seed=seed, mean_px=float(err.mean()), p99_px=float(torch.quantile(err, 0.99)),
        median_max_prob=float(torch.cat(max_probs).median()), mean_depth_bins=float(torch.cat(depth_errors).mean()),
    )


def save_sample_png(model: ConvNeXtPose, out: str | Path, seed: int = 0, index: int = 0) -> Path:
    """One evaluation-split image with the ground truth (green) and prediction (red) skeletons."""
    spec = model.spec
    sample = render_sample(seed, index, spec.input_size, EVAL, spec.heatmap_size)
    images = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float().div(255)
    joints, _ = predict(model.eval(), images)
    pred_px = joints[0, :, :2].numpy() * spec.input_size / spec.heatmap_size
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_skeletons(sample.image, {(0, 255, 0): sample.joints_px, (255, 0, 0): pred_px}).save(out)
    return out


def write_trained_checkpoint(
    spec: ModelSpec,
    out_path: str | Path,
    seed: int = 0,
    schedule: Schedule | None = None,
    steps: int | None = None,
    short: bool = False,
    budget_s: float | None = None,
    eval_n: int = 200,
    threads: int = 2,
    progress: bool = True,
    sample_png: str | Path | None = None,
) -> Path:
    """Train, evaluate, and write {'epoch', 'network' (module.), 'optimizer', 'synthetic'} atomically."""
    schedule = _resolve(spec, schedule, steps, short)
    model, optimizer, report = _train(spec, seed, schedule, budget_s, 50, threads, progress)
    ev = evaluate_synthetic(model, n=eval_n, seed=seed)
    log.info("%s eval on %d fresh images: mean %.3f px, p99 %.3f px, median max prob %.3f, depth %.3f bins",
             spec.name, ev.n, ev.mean_px, ev.p99_px, ev.median_max_prob, ev.mean_depth_bins)
    if sample_png:
        save_sample_png(model, sample_png, seed)
    # The real AdamW state of this run; optimizer_state() only if a run produced none.
    opt_state = optimizer.state_dict() if optimizer.state else optimizer_state(model)
    payload = {
        "epoch": report.steps,  # no epochs on an endless synthetic stream: the step count
        "network": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": opt_state,
        "synthetic": {
            "kind": "trained-synthetic",
            "variant": spec.name,
            "seed": seed,
            "joints": spec.joints,
            "task": "models.synthetic_task (figures on photo/procedural backgrounds)",
            "schedule": dataclasses.asdict(schedule),
            "steps": report.steps,
            "images_seen": report.images_seen,
            "train_seconds": round(report.wall_s, 1),
            "final_loss": report.final_loss,
            "stopped_early": report.stopped_early,
            "eval_n": ev.n,
            "eval_seed": ev.seed,
            "eval_mean_px": ev.mean_px,
            "eval_p99_px": ev.p99_px,
            "eval_median_max_prob": ev.median_max_prob,
            "eval_mean_depth_bins": ev.mean_depth_bins,
            "note": "trained on synthetic figures only: localises joints on the synthetic task, NOT on real photos",
        },
    }
    out = Path(out_path)
    save_atomic(payload, out)
    log.info("wrote trained-synthetic %s checkpoint to %s (%d steps, %.0f s)", spec.name, out, report.steps, report.wall_s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="XS")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short", action="store_true", help="CI schedule (seconds to minutes, not converged)")
    p.add_argument("--steps", type=int, help="override the schedule's length")
    p.add_argument("--budget-s", type=float, help="stop early after this many seconds (safety)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sample", type=Path, help="PNG with ground truth and predicted skeletons")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    write_trained_checkpoint(spec_for(args.variant), args.out, seed=args.seed, steps=args.steps, short=args.short,
                             budget_s=args.budget_s, threads=args.threads, sample_png=args.sample)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
