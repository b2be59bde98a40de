"""`convnextpose` command line: inspect, make-checkpoint, eval-synthetic, export, verify, check-golden, bench,
diagnose, profile, demo.

Exit codes: 0 done; 3 export published some artifacts and rejected others (the summary and the
manifest say which and why); 2 a user error (bad checkpoint, mismatch, bad option) or nothing could
be exported -- one paragraph, no traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from common import environment, quiet, scratch
from common.errors import ConvNeXtPoseError
from models.spec import DEFAULT_JOINTS, REGISTRY

log = logging.getLogger("convnextpose")
EXIT_USER_ERROR = 2


def _inspect(args: argparse.Namespace) -> int:
    from models.checkpoint import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, args.variant, args.joints, args.upsample)
    info = loaded.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    spec = loaded.spec
    lines = [
        f"checkpoint      {loaded.path}",
        f"sha256          {loaded.sha256}",
        f"variant         {loaded.matched_variant or 'none (custom spec)'}",
        f"depths          {list(spec.depths)}",
        f"dims            {list(spec.dims)}",
        f"head channels   {spec.head_channels}",
        f"upsampling      {spec.num_upsample} (from {loaded.upsample_source})",
        f"joints x depth  {spec.joints} x {spec.depth_bins}",
        f"heatmap DxHxW   {'x'.join(map(str, spec.heatmap_shape))}",
        f"input           1x3x{spec.input_size}x{spec.input_size}",
        f"params          {spec.params:,}",
        f"state_dict      {spec.state_dict_elements:,} elements",
        f"GMACs           {spec.macs / 1e9:.2f}",
        f"head keys       {loaded.head_key_style}",
        f"epoch           {loaded.epoch}",
        f"synthetic       {_synthetic_words(loaded.synthetic)}",
    ]
    lines += [f"warning         {w}" for w in loaded.warnings]
    print("\n".join(lines))
    return 0


def _synthetic_words(marker: dict | None) -> str:
    if not marker:
        return "no"
    from models.checkpoint import TRAINED_KIND

    if marker.get("kind") == TRAINED_KIND:
        return (f"trained-synthetic: trained on synthetic figures only ({marker.get('steps')} steps, eval mean "
                f"{marker.get('eval_mean_px', float('nan')):.2f} px); NOT a model of real photos")
    return f"{marker.get('kind')} (NOT a trained model)"


def _make_checkpoint(args: argparse.Namespace) -> int:
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


def _eval_synthetic(args: argparse.Namespace) -> int:
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


def _export(args: argparse.Namespace) -> int:
    from exporters.build.pipeline import ExportOptions, run_export

    options = ExportOptions(
        variant=args.variant,
        checkpoint=args.checkpoint,
        out_dir=args.out,
        joints=args.joints,
        num_upsample=args.upsample,
        formats=args.formats,
        fold_normalization=not args.normalized_input,
        opset=args.opset,
        dynamic_batch=args.dynamic_batch,
        simplifier=args.simplifier,
        images_dir=args.images,
        calib_dir=args.calib,
        seed=args.seed,
        untrained_default=args.untrained,
        max_error_px=args.max_error_px,
        reject_borderline=args.reject_borderline,
        strict=args.strict,
        coreml_input=args.coreml_input,
        verify_arch=args.verify_arch,
        verify_arch_timeout_s=args.verify_arch_timeout,
    )
    if args.untrained and args.checkpoint:
        raise ConvNeXtPoseError("--untrained picks the built-in checkpoint: do not combine it with --checkpoint")
    if args.max_error_px is not None and not args.max_error_px > 0:
        raise ConvNeXtPoseError(f"--max-error-px must be a positive number of input pixels, got {args.max_error_px}")
    return run_export(options).exit_code


def _verify(args: argparse.Namespace) -> int:
    if args.arch == "arm64":
        return _verify_arm64(args)
    import torch

    from common.tables import format_table
    from exporters.build.publish import tidy
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


def _verify_arm64(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.arm64 import BENCH_ARM64_JSON
    from benchmarks.report import BENCH_JSON
    from common.tables import format_table
    from exporters.app_files import model_card
    from exporters.build.publish import out_lock
    from judging.verify import check_on_arm64

    torch.set_num_threads(args.threads)
    with out_lock(args.out):  # it rewrites the manifest, golden.json and the card: no export may swap OUT meanwhile
        manifest, checks = check_on_arm64(args.out, args.images, timeout_s=args.timeout)
        bench_json, arm64_json = args.out / BENCH_JSON, args.out / BENCH_ARM64_JSON
        model_card.write(args.out, manifest, json.loads(bench_json.read_text()) if bench_json.is_file() else None,
                         json.loads(arm64_json.read_text()) if arm64_json.is_file() else None)
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


def _check_golden(args: argparse.Namespace) -> int:
    from judging import golden

    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        raise ConvNeXtPoseError(f"{args.results}: not a readable JSON file of results ({exc})") from None
    runs = results.get("results", [results]) if isinstance(results, dict) else None
    if not runs or not all(isinstance(r, dict) for r in runs):
        raise ConvNeXtPoseError(f"{args.results}: expected {{\"artifact\": FILE, \"joints\": {{INPUT_ID: J x 3}}}} "
                                "or {\"results\": [...]} (README 'Golden vectors')")
    failed = []
    for run in runs:
        name, checks = golden.check(args.out, run, args.budget, args.tolerance)
        print(golden.report(name, checks))
        failed += [name] if not all(c.passed for c in checks) else []
    if failed:
        raise ConvNeXtPoseError(f"results for {', '.join(failed)} are outside their golden tolerance")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.latency import LatencySettings
    from benchmarks.report import BENCH_MD, compare
    from benchmarks.run import BenchOptions, run_bench

    if args.compare:
        print(compare(*args.compare))
        return 0
    if args.out is None:
        raise ConvNeXtPoseError("bench needs the export folder OUT (or --compare OLD.json NEW.json)")
    if args.arch == "arm64":
        return _bench_arm64(args)
    settings = LatencySettings(warmup_runs=args.warmup, min_runs=args.min_runs, min_seconds=args.min_seconds)
    run_bench(BenchOptions(out_dir=args.out, threads=args.threads, images_dir=args.images, repeats=args.repeats,
                           settings=settings, only=tuple(args.only.split(",")) if args.only else (),
                           synthetic_n=args.synthetic_n))
    print((args.out / BENCH_MD).read_text())
    return 0


def _bench_arm64(args: argparse.Namespace) -> int:
    from benchmarks import arm64
    from benchmarks.report import BENCH_JSON
    from exporters.app_files import model_card
    from exporters.build.publish import out_lock
    from judging.manifest import Manifest
    from runtimes.arm64.target import CPU_MODELS, cpu_model

    only = tuple(args.only.split(",")) if args.only else ()
    cpus = tuple(cpu_model(name) for name in args.cores.split(",")) if args.cores else CPU_MODELS
    rows = arm64.count_instructions(args.out, cpus=cpus, only=only, timeout_s=args.timeout,
                                    caches=not args.no_caches, profile=args.profile)
    memory = arm64.measure_files_memory(args.out, only)
    data = arm64.report(args.out, rows, memory)
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


def _diagnose(args: argparse.Namespace) -> int:
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


def _profile(args: argparse.Namespace) -> int:
    from benchmarks.profile import profile_stages, stage_table

    print(stage_table(profile_stages(args.out, args.threads)))
    return 0


def _kernels(args: argparse.Namespace) -> int:
    from benchmarks.kernels import report, tables, time_kernels, write_report
    from models.spec import spec_for

    data = report(time_kernels(spec_for(args.variant), args.threads), args.threads)
    print(tables(data))
    print(f"wrote {write_report(data, args.report_dir)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from benchmarks.demo import run_demo

    print(run_demo(args.image, args.out, args.output, args.threads, args.synthetic))
    return 0


def _arm64_timeout() -> float:
    from runtimes.arm64.runner import DEFAULT_TIMEOUT_S

    return DEFAULT_TIMEOUT_S


def _budget_defaults() -> str:
    from judging.gates import DEFAULT_BUDGET_INPUT_PX

    return ", ".join(f"{family} {px:g} px" for family, px in DEFAULT_BUDGET_INPUT_PX.items())


def _variant(name: str) -> str:
    if name.upper() not in REGISTRY:
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}; choose from {', '.join(REGISTRY)}")
    return name.upper()


def _formats(text: str) -> tuple[str, ...]:
    from exporters.formats import format_names

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in format_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown or [text]}; "
                                         f"choose from {', '.join(format_names())}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from exporters.formats import default_formats, describe_formats, format_names

    parser = argparse.ArgumentParser(prog="convnextpose", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="infer a checkpoint's architecture and check it against a variant")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--variant", type=_variant, help="variant the checkpoint must match (XS/S/M/L)")
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS, help="number of joints J (default 18)")
    p.add_argument("--upsample", type=int, help="upsampling layers of a custom head (no weights tell it)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("make-checkpoint",
                       help="write a synthetic checkpoint (untrained, or --trained) in the released layout")
    p.add_argument("variant", type=_variant)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--legacy-head-keys", action="store_true", help="deconv_layers_N.0|1|2 key style (as M/L)")
    p.add_argument("--trained", action="store_true",
                   help="trained on the synthetic pose task (~15 min on 2 cores the first time, then cached)")
    p.add_argument("--short", action="store_true", help="with --trained: the seconds-long CI schedule (not converged)")
    p.set_defaults(func=_make_checkpoint)

    p = sub.add_parser("eval-synthetic", help="2D/depth joint error of a checkpoint on fresh synthetic images")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--n", type=int, default=200, help="number of evaluation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="evaluation split seed")
    p.add_argument("--variant", type=_variant)
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--upsample", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.set_defaults(func=_eval_synthetic)

    p = sub.add_parser("export", help="export ONNX, TFLite and CoreML, each verified against PyTorch")
    p.add_argument("--variant", type=_variant, help="variant the checkpoint must match; default from the checkpoint")
    p.add_argument("--checkpoint", type=Path,
                   help="checkpoint file; default: the trained-synthetic reference weights (built once, then cached)")
    p.add_argument("--untrained", action="store_true",
                   help="without --checkpoint: synthetic untrained weights (seconds to build; for pipeline tests)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--upsample", type=int, help="upsampling layers of a custom head")
    p.add_argument("--formats", type=_formats, default=default_formats(), metavar=",".join(format_names()),
                   help=f"comma list of formats (default: {','.join(default_formats())}). {describe_formats()}")
    p.add_argument("--calib", type=Path,
                   help="folder of photos for int8 calibration (default: the synthetic task's TRAIN split for the "
                        "trained-synthetic weights, else every other sample photo); kept disjoint from the judged "
                        "inputs")
    p.add_argument("--normalized-input", action="store_true",
                   help="keep ImageNet normalisation outside the model (default: folded in, input RGB in [0,1])")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX with a dynamic batch axis")
    p.add_argument("--simplifier", choices=("onnxsim", "onnxslim"), default="onnxsim")
    p.add_argument("--images", type=Path, help="folder of images for parity checks (default: sample people photos)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic checkpoint and random inputs")
    p.add_argument("--max-error-px", type=float, metavar="PX",
                   help="budget of every fp16 and integer artifact: p99 2-D joint error vs PyTorch fp32 on the judged "
                        f"inputs, in px of the input crop (defaults: {_budget_defaults()})")
    p.add_argument("--reject-borderline", action="store_true",
                   help="reject a file whose cost's 95%% interval still straddles its budget on the most images the "
                        "export judges it on (default: decided by its p99 there, labelled borderline)")
    p.add_argument("--coreml-input", choices=("image", "tensor"),
                   help="Core ML input: an RGB image (default; Vision and Xcode's preview take it, a camera "
                        "CVPixelBuffer goes straight in) or the float tensor (default with --normalized-input)")
    p.add_argument("--strict", action="store_true",
                   help="all or nothing: any rejected artifact fails the export (exit 2) and OUT is left as it was")
    p.add_argument("--verify-arch", choices=("arm64",),
                   help="also judge every .tflite/.onnx/.ort on the emulated arm64 phone cores (minutes; needs `make "
                        "arm64`): a file failing there is rejected; golden CPU tolerances from the measured "
                        "cross-CPU difference")
    p.add_argument("--verify-arch-timeout", type=float, default=_arm64_timeout(), metavar="S",
                   help="seconds one file may take on one emulated core before it is rejected (default %(default)g)")
    p.set_defaults(func=_export)

    p = sub.add_parser("verify", help="re-hash every artifact of an export and re-run its checks on this machine")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--images", type=Path, help="where the export's verification photos are now, if they moved")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime and of PyTorch (default 2)")
    p.add_argument("--arch", choices=("host", "arm64"), default="host",
                   help="host: this machine (default); arm64: every .tflite/.onnx/.ort on the emulated phone cores "
                        "(Cortex-A76, Cortex-A53; one thread, golden inputs; needs `make arm64`), recorded in the "
                        "manifest and golden.json")
    p.add_argument("--timeout", type=float, default=_arm64_timeout(), metavar="S",
                   help="arm64: seconds one file may take on one emulated core before it is failed "
                        "(default %(default)g)")
    p.set_defaults(func=_verify)

    p = sub.add_parser("check-golden", help="judge joints produced elsewhere (a phone) against an export's golden "
                                           "vectors")
    p.add_argument("out", type=Path, help="export folder holding golden/golden.json")
    p.add_argument("results", type=Path, help='JSON: {"artifact": FILE, "joints": {"input_000": [[x, y, z], ...]}}')
    p.add_argument("--tolerance", choices=("cpu", "delegate"), default="cpu",
                   help="cpu (default): the file ran on a phone's CPU in its runtime (tolerance measured across CPUs "
                        "where the export was verified on arm64); delegate: it ran on a GPU/NPU delegate (fp16 or "
                        "the delegate's integer kernels: the precision budget)")
    p.add_argument("--budget", choices=("fp16", "int8"),
                   help="hold the results to this precision's budget instead")
    p.set_defaults(func=_check_golden)

    p = sub.add_parser("bench", help="latency and parity of every exported backend against PyTorch")
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
    p.add_argument("--timeout", type=float, default=_arm64_timeout(), metavar="S",
                   help="arm64: seconds one file may take on one emulated core (default %(default)g)")
    p.add_argument("--cores", metavar="LIST",
                   help="arm64: comma list of emulated cores (default: cortex-a55,cortex-a76,cortex-a710,cortex-a53)")
    p.add_argument("--no-caches", action="store_true",
                   help="arm64: skip the first frames through the runtimes' weight caches (a third of the time)")
    p.add_argument("--profile", action="store_true",
                   help="arm64: also where each TFLite file's inference goes, by XNNPACK kernel (bench_arm64.md)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("diagnose", help="where each artifact departs from PyTorch: error at every boundary of the "
                                        "network (stem, blocks, head, logits, joints)")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--artifact", type=Path,
                   help="one file: an artifact of OUT by name, or any file of a kind this project writes (e.g. a "
                        "rejected one rebuilt aside); default: every published artifact")
    p.add_argument("--images", type=Path, help="where the export's verification photos are now, if they moved")
    p.add_argument("--count", type=int, default=4, help="verification inputs to run (default 4)")
    p.add_argument("--report-dir", type=Path, help="where diagnose.json and diagnose.png go (default OUT)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("profile", help="time each stage of the network in ONNX Runtime and TFLite")
    p.add_argument("out", type=Path, help="export folder holding manifest.json")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_profile)

    p = sub.add_parser("kernels", help="the network's block convolutions timed one at a time in TFLite (XNNPACK), "
                                       "ONNX Runtime and fbgemm, fp32 and int8: which library is the wall")
    p.add_argument("--variant", type=_variant, default="S")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-dir", type=Path, default=Path("artifacts/kernels"), help="where kernels.json goes")
    p.set_defaults(func=_kernels)

    p = sub.add_parser("demo", help="draw each backend's predicted skeleton over a photo, side by side")
    p.add_argument("image", type=Path, nargs="?", help="photo (or use --synthetic)")
    p.add_argument("--synthetic", type=int, metavar="INDEX",
                   help="instead of a photo: evaluation image INDEX of the synthetic task, ground truth drawn first")
    p.add_argument("--out", type=Path, required=True, help="export folder holding manifest.json")
    p.add_argument("--output", type=Path, help="PNG to write (default OUT/demo_<image>.png)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_demo)
    return parser


OUR_LOGGERS = ("convnextpose", "common", "models", "runtimes", "judging", "exporters", "benchmarks")
#: Commands that load a converter or a runtime that prints while it loads (TensorFlow, coremltools).
_CONVERTING = {"export", "verify", "bench", "diagnose", "profile", "kernels", "demo"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    environment.apply()  # telemetry off, library settings out of HOME: before any library is imported
    verbose = bool({"-v", "--verbose"} & set(argv))
    quiet.configure(verbose)  # before anything imports a converter: some read their settings at import
    if next((a for a in argv if not a.startswith("-")), None) == "export":
        # An export runs up to three processes on the cores (exporters/build/side_stage.py): OpenMP workers that
        # spin between PyTorch ops take CPU from the others (S, 3 interleaved pairs: median 33.9 s wall,
        # 46.7 s user with PASSIVE; 36.0 s, 50.3 s without). Read when PyTorch loads, so set before.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    # Our own packages log progress at INFO; libraries that log to the root logger only warnings (-v: all).
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for package in OUR_LOGGERS:
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        # every temporary file of the run, the converters' own included, in one folder removed at the end
        with scratch.run_folder():
            if args.command == "export":  # coremltools (2.5 s) is imported by the Core ML stage, beside the others
                quiet.import_quietly("tensorflow")
            elif args.command in _CONVERTING:
                quiet.import_quietly()
            return args.func(args)
    except ConvNeXtPoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; no partial artifacts were left in place", file=sys.stderr)
        return 130


def run() -> None:
    """The `convnextpose` command. Once it has answered, the atexit handlers run (logging and
    multiprocessing clean-up, temporary folders), output is flushed and the process ends without the
    interpreter tearing down its modules: with TensorFlow, PyTorch and coremltools loaded that teardown
    took 2.6 s after an export of S (measured), and nothing of ours depends on it. After Ctrl-C it also
    keeps an interrupt that landed while TensorFlow was importing from making the shutdown itself die of
    SIGINT (exit -2 instead of 130, measured in 1 of 9 interrupts in that window)."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # python -m cli
    run()
