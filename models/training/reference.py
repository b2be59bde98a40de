"""Train on the synthetic task and write the result in the released checkpoint layout.

Same layout as models.synthetic.untrained.write_synthetic_checkpoint -- {'epoch', 'network' ('module.'
keys), 'optimizer' (AdamW state), 'synthetic' marker} -- with marker kind 'trained-synthetic'
and the training and evaluation summary, so every later figure can say which weights it used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

from common.paths import CHECKPOINT_CACHE_DIR
from models.checkpoint import TRAINED_KIND
from models.spec import ModelSpec
from models.synthetic.untrained import optimizer_state, save_atomic
from models.training.evaluate import evaluate_synthetic, save_sample_png
from models.training.loop import train_model
from models.training.schedule import Schedule, resolve

log = logging.getLogger(__name__)


def write_trained_checkpoint(
    spec: ModelSpec,
    out_path: str | Path,
    seed: int = 0,
    schedule: Schedule | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    short: bool = False,
    eval_n: int = 200,
    threads: int = 2,
    progress: bool = True,
    sample_png: str | Path | None = None,
) -> Path:
    """Train (``resolve`` picks the schedule), evaluate on fresh images, write atomically; returns the path."""
    schedule = resolve(spec, schedule, steps, budget_s, short)
    model, optimizer, report = train_model(spec, seed, schedule, threads=threads, progress=progress)
    ev = evaluate_synthetic(model, n=eval_n, seed=seed, task=schedule.task)
    log.info("%s on %d fresh images: mean %.3f px, p99 %.3f px, median max prob %.4f (xy %.3f, mass within 2 px "
             "of the peak %.3f), depth %.2f bins", spec.name, ev.n, ev.mean_px, ev.p99_px, ev.median_max_prob,
             ev.median_xy_max_prob, ev.median_peak_mass, ev.mean_depth_bins)
    if sample_png:
        save_sample_png(model, sample_png, seed, task=schedule.task)
    # The run's own AdamW state (its moments are for the weights before the logit scale was folded in).
    opt_state = optimizer.state_dict() if optimizer.state else optimizer_state(model)
    payload = {
        "epoch": report.steps,  # an endless synthetic stream has no epochs: the step count
        "network": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": opt_state,
        "synthetic": {
            "kind": TRAINED_KIND,
            "variant": spec.name,
            "seed": seed,
            "joints": spec.joints,
            "task": "models.synthetic.task: mannequin figures on photo/procedural backgrounds",
            "schedule": _plain(dataclasses.asdict(schedule)),
            "steps": report.steps,
            "low_res_steps": report.low_res_steps,
            "images_seen": report.images_seen,
            "train_seconds": round(report.wall_s, 1),
            "thread_steps": [list(t) for t in report.thread_steps],
            "final_loss": report.final_loss,
            "eval_n": ev.n,
            "eval_seed": ev.seed,
            "eval_split": "EVAL (disjoint from training)",
            "eval_mean_px": ev.mean_px,
            "eval_p99_px": ev.p99_px,
            "eval_median_max_prob": ev.median_max_prob,
            "eval_median_xy_max_prob": ev.median_xy_max_prob,
            "eval_median_peak_mass": ev.median_peak_mass,
            "eval_mean_depth_bins": ev.mean_depth_bins,
            "note": "trained on synthetic figures only: localises joints on that task, NOT on real photos",
        },
    }
    out = Path(out_path)
    save_atomic(payload, out)
    log.info("wrote %s %s checkpoint to %s (%d steps, %.0f s)", TRAINED_KIND, spec.name, out, report.steps,
             report.wall_s)
    return out


def _plain(d: dict) -> dict:
    """Only types torch.load(weights_only=True) accepts: tuples become lists, recursively."""
    return {k: _plain(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# ---- the cached reference weights ------------------------------------------------------------
#: Where reference weights are built once and reused (ignored by git, see artifacts/README.md).
CACHE_DIR = CHECKPOINT_CACHE_DIR


def schedule_digest(spec: ModelSpec, schedule: Schedule, seed: int) -> str:
    """Names what a cached file was trained with: a changed recipe, spec or seed never reuses an old file."""
    key = repr((dataclasses.astuple(spec), _plain(dataclasses.asdict(schedule)), seed))
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def reference_checkpoint(
    spec: ModelSpec, seed: int = 0, short: bool = False, cache_dir: str | Path | None = None, progress: bool = True,
) -> Path:
    """The trained-synthetic reference checkpoint of ``spec``: trained on the first call, then read from the cache."""
    schedule = resolve(spec, None, None, None, short)
    name = (f"trained-synthetic-{spec.name}-j{spec.joints}-seed{seed}{'-short' if short else ''}-"
            f"{schedule_digest(spec, schedule, seed)}.pth.tar")
    path = Path(cache_dir or CACHE_DIR) / name
    if path.is_file():
        log.info("reference weights from the cache: %s", path)
        return path
    from models.training.loop import estimate_seconds

    minutes = estimate_seconds(spec, schedule) / 60
    log.warning("training the %s reference weights once (%s schedule, %d steps): about %.0f min on this machine "
                "(estimated from timing a few steps); later calls reuse %s", spec.name,
                "short CI" if short else "full", schedule.steps, minutes, path)
    return write_trained_checkpoint(spec, path, seed=seed, schedule=schedule, progress=progress)
