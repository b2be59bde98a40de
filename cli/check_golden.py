"""`convnextpose check-golden`: joints produced elsewhere (a phone) judged against an export's golden vectors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import ConvNeXtPoseError

NAME = "check-golden"
PRELOAD = None  # loads no converter


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="judge joints produced elsewhere (a phone) against an export's golden vectors")
    p.add_argument("out", type=Path, help="export folder holding golden/golden.json")
    p.add_argument("results", type=Path, help='JSON: {"artifact": FILE, "joints": {"input_000": [[x, y, z], ...]}}')
    p.add_argument("--tolerance", choices=("cpu", "delegate"), default="cpu",
                   help="cpu (default): the file ran on a phone's CPU in its runtime (tolerance measured across CPUs "
                        "where the export was verified on arm64); delegate: it ran on a GPU/NPU delegate (fp16 or "
                        "the delegate's integer kernels: the precision budget)")
    p.add_argument("--budget", choices=("fp16", "int8"),
                   help="hold the results to this precision's budget instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from judging import golden

    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        raise ConvNeXtPoseError(f"{args.results}: not a readable JSON file of results ({exc})") from None
    runs = results.get("results", [results]) if isinstance(results, dict) else None
    if not runs or not all(isinstance(r, dict) for r in runs):
        raise ConvNeXtPoseError(f"{args.results}: expected {{\"artifact\": FILE, \"joints\": {{INPUT_ID: J x 3}}}} "
                                "or {\"results\": [...]} (docs/app-integration.md, 'Golden vectors')")
    failed = []
    for run_ in runs:
        name, checks = golden.check(args.out, run_, args.budget, args.tolerance)
        print(golden.report(name, checks))
        failed += [name] if not all(c.passed for c in checks) else []
    if failed:
        raise ConvNeXtPoseError(f"results for {', '.join(failed)} are outside their golden tolerance")
    return 0
