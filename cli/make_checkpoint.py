"""`convnextpose make-checkpoint`: a synthetic checkpoint in the released layout, untrained or trained on the
synthetic pose task."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cli.arguments import variant
from common.errors import ConvNeXtPoseError
from models.spec import DEFAULT_JOINTS

NAME = "make-checkpoint"
PRELOAD = None  # loads no converter
log = logging.getLogger("convnextpose")


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="write a synthetic checkpoint (untrained, or --trained) in the released layout")
    p.add_argument("variant", type=variant)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--legacy-head-keys", action="store_true", help="deconv_layers_N.0|1|2 key style (as M/L)")
    p.add_argument("--trained", action="store_true",
                   help="trained on the synthetic pose task (~15 min on 2 cores the first time, then cached)")
    p.add_argument("--short", action="store_true", help="with --trained: the seconds-long CI schedule (not converged)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.spec import spec_for
    from models.synthetic.untrained import write_synthetic_checkpoint

    spec = spec_for(args.variant, args.joints)
    if not args.trained:
        if args.short:
            raise ConvNeXtPoseError("--short is a training schedule: use it with --trained")
        write_synthetic_checkpoint(spec, args.out, seed=args.seed, legacy_head_keys=args.legacy_head_keys)
        return 0
    if args.legacy_head_keys:
        raise ConvNeXtPoseError("--legacy-head-keys is for untrained checkpoints; trained ones use the named layout")
    from common.files import copy_atomic
    from models.training.reference import reference_checkpoint

    cached = reference_checkpoint(spec, seed=args.seed, short=args.short)
    copy_atomic(cached, args.out)
    log.info("wrote %s (trained-synthetic %s, from %s)", args.out, spec.name, cached)
    return 0
