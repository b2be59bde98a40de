"""`convnextpose kernels`: the network's block convolutions timed one at a time per library, fp32 and int8."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.arguments import variant

NAME = "kernels"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="the network's block convolutions timed one at a time in TFLite (XNNPACK), "
                                  "ONNX Runtime and fbgemm, fp32 and int8: which library is the wall")
    p.add_argument("--variant", type=variant, default="S")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-dir", type=Path, default=Path("artifacts/kernels"), help="where kernels.json goes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.kernels import report, tables, time_kernels, write_report
    from models.spec import spec_for

    data = report(time_kernels(spec_for(args.variant), args.threads), args.threads)
    print(tables(data))
    print(f"wrote {write_report(data, args.report_dir)}")
    return 0
