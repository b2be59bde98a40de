"""`convnextpose bench`: latency and parity of every exported file on this machine, or its instructions per
inference on the emulated arm64 phone cores (--arch arm64); --compare two runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.arguments import arm64_timeout
from common.errors import ConvNeXtPoseError

NAME = "bench"
PRELOAD = ()  # the noisy converters' libraries, imported quietly


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="latency and parity of every exported backend against PyTorch")
    p.add_argument("out", type=Path, nargs="?", help="export folder holding manifest.json")
    p.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    p.add_argument("--images", type=Path,
                   help="where the export's verification photos are now, if they moved (default: the folder the "
                        "manifest records; the bench judges on exactly the images the export did)")
    p.add_argument("--repeats", type=int, default=1, help="repeat every backend's timing in fresh processes")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--only", help="comma list of backend names")
    p.add_argument("--synthetic-n", type=int, default=100,
                   help="synthetic-task images for parity of weights trained on that task (default 100)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two bench.json files")
    p.add_argument("--arch", choices=("host", "arm64"), default="host",
                   help="host: latency and parity on this machine (default); arm64: guest instructions per inference "
                        "and before the first result (with and without the runtime's weight cache) of every "
                        ".tflite/.onnx/.ort on the emulated phone cores, and the memory each needs (measured here) "
                        "(needs `make arm64`; minutes)")
    p.add_argument("--timeout", type=float, default=arm64_timeout(), metavar="S",
                   help="arm64: seconds one file may take on one emulated core (default %(default)g)")
    p.add_argument("--cores", metavar="LIST",
                   help="arm64: comma list of emulated cores (default: cortex-a55,cortex-a76,cortex-a710,cortex-a53)")
    p.add_argument("--no-caches", action="store_true",
                   help="arm64: skip the first frames through the runtimes' weight caches (a third of the time)")
    p.add_argument("--profile", action="store_true",
                   help="arm64: also where each TFLite file's inference goes, by XNNPACK kernel (bench_arm64.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.latency import LatencySettings
    from benchmarks.report import BENCH_MD, compare
    from benchmarks.run import BenchOptions, run_bench

    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.out is None:
        raise ConvNeXtPoseError("bench needs the export folder OUT (or --compare OLD.json NEW.json)")
    if args.arch == "arm64":
        return _on_arm64(args)
    settings = LatencySettings(warmup_runs=args.warmup, min_runs=args.min_runs, min_seconds=args.min_seconds)
    run_bench(BenchOptions(out_dir=args.out, threads=args.threads, images_dir=args.images, repeats=args.repeats,
                           settings=settings, only=tuple(args.only.split(",")) if args.only else (),
                           synthetic_n=args.synthetic_n))
    print((args.out / BENCH_MD).read_text())
    return 0


def _on_arm64(args: argparse.Namespace) -> int:
    import json

    from benchmarks import arm64
    from benchmarks.report import BENCH_JSON
    from exporters.app_files import model_card
    from exporters.pipeline.publish import out_lock
    from judging.manifest import Manifest
    from runtimes.arm64.target import CPU_MODELS, cpu_model

    only = tuple(args.only.split(",")) if args.only else ()
    cpus = tuple(cpu_model(name) for name in args.cores.split(",")) if args.cores else CPU_MODELS
    rows = arm64.count_instructions(args.out, cpus=cpus, only=only, timeout_s=args.timeout,
                                    caches=not args.no_caches, profile=args.profile)
    data = arm64.report(args.out, rows, arm64.measure_files_memory(args.out, only))
    written = arm64.write_reports(args.out, data)
    bench_json = args.out / BENCH_JSON
    with out_lock(args.out):  # the card gains the phone costs
        model_card.write(args.out, Manifest.read(args.out),
                         json.loads(bench_json.read_text()) if bench_json.is_file() else None, data)
    print(written[1].read_text())
    failed = [f"{r.file} on {r.cpu}: {r.reason}" for r in rows if r.status != "counted"]
    if failed:
        raise ConvNeXtPoseError(f"{len(failed)} file(s) could not be counted:\n  " + "\n  ".join(failed))
    return 0
