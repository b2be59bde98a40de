"""Train a ConvNeXtPose that really localises joints, on CPU in minutes, for honest precision figures.

Why: released checkpoints cannot be downloaded here, and untrained weights have multi-modal
heatmaps that exaggerate quantisation error. A network trained on the synthetic figure task
(models.synthetic.task) has unimodal heatmaps on that task's images.

This module is the entry point; the parts live in train_schedule (what to run), train_loop
(the loop), train_losses, train_eval (figures, sample picture) and trained_checkpoint (the file).

    python -m models.training.train --variant XS --out /tmp/train/XS.pth.tar --sample /tmp/train/sample_XS.png
    python -m models.training.train --variant XS --out /tmp/xs-ci.pth.tar --short      # CI schedule: ~1.5 min
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.network import ConvNeXtPose
from models.spec import ModelSpec, spec_for
from models.training.evaluate import EvalReport, evaluate_synthetic, predict, save_sample_png
from models.training.loop import TrainReport, train_model
from models.training.reference import TRAINED_KIND, write_trained_checkpoint
from models.training.schedule import FULL_SCHEDULES, SHORT_SCHEDULE, Schedule, resolve, schedule_for

__all__ = [
    "FULL_SCHEDULES", "SHORT_SCHEDULE", "TRAINED_KIND", "EvalReport", "Schedule", "TrainReport",
    "evaluate_synthetic", "predict", "save_sample_png", "schedule_for", "train_reference", "write_trained_checkpoint",
]


def train_reference(
    spec: ModelSpec,
    seed: int = 0,
    schedule: Schedule | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    short: bool = False,
    log_every: int = 50,
    threads: int = 2,
    progress: bool = True,
) -> tuple[ConvNeXtPose, TrainReport]:
    """Train ``spec`` from scratch on the synthetic task; returns (model in eval mode, report).

    Default: the variant's full schedule (``short=True``: the CI one). ``steps`` makes it a
    step-mode run of that length, ``budget_s`` a time-mode run of that many seconds.
    """
    model, _, report = train_model(spec, seed, resolve(spec, schedule, steps, budget_s, short), threads=threads,
                                   log_every=log_every, progress=progress)
    return model, report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Train ConvNeXtPose on the synthetic pose task; write a released-layout checkpoint.")
    p.add_argument("--variant", default="XS")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short", action="store_true", help="CI schedule (300 steps, ~1.5 min for XS; not converged)")
    p.add_argument("--steps", type=int, help="step-mode run of this many steps")
    p.add_argument("--budget-s", type=float, help="time-mode run of this many seconds")
    p.add_argument("--threads", type=int, default=2, help="most intra-op threads (fewer when measured faster)")
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--sample", type=Path, help="PNG with ground-truth (green) and predicted (red) skeletons")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    write_trained_checkpoint(spec_for(args.variant), args.out, seed=args.seed, steps=args.steps, budget_s=args.budget_s,
                             short=args.short, eval_n=args.eval_n, threads=args.threads, sample_png=args.sample)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
