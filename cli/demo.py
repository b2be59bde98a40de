"""`convnextpose demo`: each backend's skeleton drawn over a photo (or a synthetic image), side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="draw each backend's predicted skeleton over a photo, side by side")
    p.add_argument("image", type=Path, nargs="?", help="photo (or use --synthetic)")
    p.add_argument("--synthetic", type=int, metavar="INDEX",
                   help="instead of a photo: evaluation image INDEX of the synthetic task, ground truth drawn first")
    p.add_argument("--out", type=Path, required=True, help="export folder holding manifest.json")
    p.add_argument("--output", type=Path, help="PNG to write (default OUT/demo_<image>.png)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.demo import run_demo

    print(run_demo(args.image, args.out, args.output, args.threads, args.synthetic))
    return 0
