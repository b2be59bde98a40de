"""`convnextpose diagnose`: where each artifact departs from PyTorch, boundary by boundary of the network."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConvNeXtPoseError

NAME = "diagnose"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="where each artifact departs from PyTorch: error at every boundary of the "
                                  "network (stem, blocks, head, logits, joints)")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--artifact", type=Path,
                   help="one file: an artifact of OUT by name, or any file of a kind this project writes (e.g. a "
                        "rejected one rebuilt aside); default: every published artifact")
    p.add_argument("--images", type=Path, help="where the export's verification photos are now, if they moved")
    p.add_argument("--count", type=int, default=4, help="verification inputs to run (default 4)")
    p.add_argument("--report-dir", type=Path, help="where diagnose.json and diagnose.png go (default OUT)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.diagnose import diagnose, tables, write_reports

    torch.set_num_threads(args.threads)
    result = diagnose(args.out, args.artifact, args.images, args.count, args.threads)
    print(tables(result))
    written = write_reports(result, args.report_dir or args.out)
    print(f"wrote {written[0]} and {written[1]}")
    if result.failures:
        raise ConvNeXtPoseError(f"{len(result.failures)} file(s) could not be diagnosed: {', '.join(result.failures)}")
    return 0
