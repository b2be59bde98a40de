"""`convnextpose verify`: every artifact of an export re-hashed and judged again -- on this machine, on the
emulated arm64 phone cores (--arch arm64) or on LiteRT's GPU accelerator (--gpu)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.arguments import arm64_timeout
from common.errors import ConvNeXtPoseError

NAME = "verify"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="re-hash every artifact of an export and re-run its checks on this machine")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--images", type=Path, help="where the export's verification photos are now, if they moved")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime and of PyTorch (default 2)")
    p.add_argument("--arch", choices=("host", "arm64"), default="host",
                   help="host: this machine (default); arm64: every .tflite/.onnx/.ort on the emulated phone cores "
                        "(Cortex-A55, A76, A710, A53; one thread, golden inputs; needs `make arm64`), recorded in the "
                        "manifest and golden.json")
    p.add_argument("--gpu", action="store_true",
                   help="every .tflite on LiteRT's GPU accelerator with its default fp16 options (a software Vulkan "
                        "device; needs `make gpu`), recorded in the manifest and golden.json")
    p.add_argument("--timeout", type=float, default=arm64_timeout(), metavar="S",
                   help="arm64 / gpu: seconds one file may take on one emulated core or the GPU before it is failed "
                        "(default %(default)g)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.arch == "arm64":
        return _on_arm64(args)
    if args.gpu:
        return _on_gpu(args)
    import torch

    from common.tables import format_table
    from exporters.pipeline.publish import tidy
    from judging.verify import check_artifacts

    torch.set_num_threads(args.threads)
    for leftover in tidy(args.out):
        print(f"removed {leftover.name}, left by an interrupted export")
    checks = check_artifacts(args.out, args.images, args.threads)
    rows = [(c["file"], c["runtime"].split(" (")[0], c["status"] + (f" ({c['reason']})" if c["reason"] else ""),
             (f"fp32 check {c['conversion']['max_input_px']:.2g} / {c['conversion']['tolerance_input_px']:.2g}"
              if c["conversion"] else f"cost p99 {c['cost']['p99_input_px']:.2g} / {c['budget_input_px']:g}"))
            for c in checks]
    print(format_table(("file", "runtime", "verdict", "input px (measured / allowed)"), rows))
    failed = [c["file"] for c in checks if c["status"] != "published"]
    if failed:
        raise ConvNeXtPoseError(f"{len(failed)} artifact(s) of {args.out} no longer pass their checks here: "
                                f"{', '.join(failed)}")
    print(f"{args.out}: every artifact matches its sha256 and passes its checks on this machine")
    return 0


def _rewriting_the_record(args: argparse.Namespace, check):
    """Run ``check(out, images, timeout_s=...)``, which rewrites the manifest and golden.json, under OUT's lock
    (no export may swap OUT meanwhile), and write the model card again; returns what ``check`` returned."""
    import torch

    from benchmarks.arm64 import BENCH_ARM64_JSON
    from benchmarks.report import BENCH_JSON
    from exporters.app_files import model_card
    from exporters.pipeline.publish import out_lock

    torch.set_num_threads(args.threads)
    with out_lock(args.out):
        manifest, checks = check(args.out, args.images, timeout_s=args.timeout)
        bench_json, arm64_json = args.out / BENCH_JSON, args.out / BENCH_ARM64_JSON
        model_card.write(args.out, manifest, json.loads(bench_json.read_text()) if bench_json.is_file() else None,
                         json.loads(arm64_json.read_text()) if arm64_json.is_file() else None)
    return checks


def _on_gpu(args: argparse.Namespace) -> int:
    from common.tables import format_table
    from judging.verify import check_on_gpu

    checks = _rewriting_the_record(args, check_on_gpu)
    rows = [(file, c.status + (f" ({c.reason.split(':')[0]})" if c.reason else ""), c.headline or "-",
             "-" if c.gpu_input_px is None else f"{c.gpu_input_px:.3g}",
             "-" if c.seconds is None else f"{c.seconds:.0f}") for file, c in checks.items()]
    print(format_table(("file", "verdict on the GPU accelerator (fp16)", "gated figure (input px)",
                        "from this machine's joints, input px", "s"), rows))
    failed = [f"{file}: {c.reason}" for file, c in checks.items() if not c.passed]
    if failed:
        raise ConvNeXtPoseError(f"{len(failed)} GPU check(s) of {args.out} failed:\n  " + "\n  ".join(failed))
    print(f"{args.out}: every .tflite passes its checks on LiteRT's GPU accelerator in fp16 (software Vulkan); "
          "manifest and golden delegate tolerances updated")
    return 0


def _on_arm64(args: argparse.Namespace) -> int:
    from common.tables import format_table
    from judging.verify import check_on_arm64

    checks = _rewriting_the_record(args, check_on_arm64)
    rows = [(file, c.cpu, c.status + (f" ({c.reason.split(':')[0]})" if c.reason else ""), c.headline or "-",
             "-" if c.cross_isa_input_px is None else f"{c.cross_isa_input_px:.3g}",
             "-" if c.seconds is None else f"{c.seconds:.0f}")
            for file, per_cpu in checks.items() for c in per_cpu]
    print(format_table(("file", "emulated CPU", "verdict", "gated figure (input px)", "from this machine's joints, "
                        "input px", "s"), rows))
    failed = [f"{file} on {c.cpu}: {c.reason}" for file, per_cpu in checks.items() for c in per_cpu if not c.passed]
    if failed:
        raise ConvNeXtPoseError(f"{len(failed)} arm64 check(s) of {args.out} failed:\n  " + "\n  ".join(failed))
    cpus = sorted({c.cpu for per_cpu in checks.values() for c in per_cpu})
    print(f"{args.out}: every .tflite, .onnx and .ort passes its checks on {', '.join(cpus)} (emulated); manifest and "
          "golden CPU tolerances updated")
    return 0
