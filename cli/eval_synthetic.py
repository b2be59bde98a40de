"""`convnextpose eval-synthetic`: a checkpoint's joint error on fresh images of the synthetic task."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cli.arguments import variant
from models.spec import DEFAULT_JOINTS

NAME = "eval-synthetic"
PRELOAD = None  # loads no converter


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="2D/depth joint error of a checkpoint on fresh synthetic images")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=200, help="number of evaluation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="evaluation split seed")
    p.add_argument("--variant", type=variant)
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--upsample", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.checkpoint import load_checkpoint
    from models.training.evaluate import evaluate_synthetic

    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint, args.variant, args.joints, args.upsample)
    report = evaluate_synthetic(loaded.build_model(), n=args.n, seed=args.seed)
    kind = loaded.synthetic.get("kind") if loaded.synthetic else "not synthetic"
    print(f"{loaded.path} ({loaded.spec.name}, {kind}) on {report.n} fresh synthetic images "
          f"(evaluation split, seed {report.seed}; never used in training)")
    print(f"2D joint error     mean {report.mean_px:.3f}  p99 {report.p99_px:.3f} heatmap px "
          f"(x{loaded.spec.input_size / loaded.spec.heatmap_size:g} for input px)")
    print(f"depth error        mean {report.mean_depth_bins:.3f} bins")
    print(f"heatmap shape      median per-joint max prob {report.median_max_prob:.4f} (3D voxel), "
          f"{report.median_xy_max_prob:.3f} (xy marginal); xy mass within 2 px of the peak "
          f"{report.median_peak_mass:.3f}")
    if args.json:
        args.json.write_text(json.dumps(dataclasses.asdict(report), indent=2))
    return 0
