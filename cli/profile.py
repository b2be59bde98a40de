"""`convnextpose profile`: each stage of the network cut out and timed in ONNX Runtime and TFLite."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "profile"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="time each stage of the network in ONNX Runtime and TFLite")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.profile import profile_stages, stage_table

    print(stage_table(profile_stages(args.out, args.threads)))
    return 0
