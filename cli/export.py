"""`convnextpose export`: every requested format of the format table built, judged against PyTorch and
published (exporters/pipeline/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.arguments import arm64_timeout, variant
from common.errors import ConvNeXtPoseError
from models.spec import DEFAULT_JOINTS

NAME = "export"
#: coremltools (2.5 s) is imported by the Core ML stage, beside the others; TensorFlow first, quietly.
PRELOAD = ("tensorflow",)
#: An export runs up to three processes on the cores (exporters/pipeline/side_stage.py): OpenMP workers that
#: spin between PyTorch ops take CPU from the others (S, 3 interleaved pairs: median 33.9 s wall, 46.7 s user
#: with PASSIVE; 36.0 s, 50.3 s without). Read when PyTorch loads, so set before.
ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def add_to(sub) -> None:
    from exporters.formats import default_formats, describe_formats, format_names

    p = sub.add_parser(NAME, help="export ONNX, TFLite and CoreML, each verified against PyTorch")
    p.add_argument("--variant", type=variant, help="variant the checkpoint must match; default from the checkpoint")
    p.add_argument("--checkpoint", type=Path,
                   help="checkpoint file; default: the trained-synthetic reference weights (built once, then cached)")
    p.add_argument("--untrained", action="store_true",
                   help="without --checkpoint: synthetic untrained weights (seconds to build; for pipeline tests)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS)
    p.add_argument("--upsample", type=int, help="upsampling layers of a custom head")
    p.add_argument("--formats", type=formats, default=default_formats(), metavar=",".join(format_names()),
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
                        f"inputs, in px of the input crop (defaults: {budget_defaults()})")
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
    p.add_argument("--verify-arch-timeout", type=float, default=arm64_timeout(), metavar="S",
                   help="seconds one file may take on one emulated core before it is rejected (default %(default)g)")
    p.add_argument("--verify-gpu", action="store_true",
                   help="also judge every .tflite on LiteRT's GPU accelerator with its default fp16 options (a "
                        "software Vulkan device; needs `make gpu`; ~10 s per XS file): a file failing there is "
                        "rejected; golden delegate tolerances from the measured difference")
    p.set_defaults(func=run)


def formats(text: str) -> tuple[str, ...]:
    from exporters.formats import format_names

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in format_names()]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown or [text]}; "
                                         f"choose from {', '.join(format_names())}")
    return names


def budget_defaults() -> str:
    from judging.gates import DEFAULT_BUDGET_INPUT_PX

    return ", ".join(f"{family} {px:g} px" for family, px in DEFAULT_BUDGET_INPUT_PX.items())


def run(args: argparse.Namespace) -> int:
    from exporters.pipeline.export import ExportOptions, run_export

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
        verify_gpu=args.verify_gpu,
    )
    if args.untrained and args.checkpoint:
        raise ConvNeXtPoseError("--untrained picks the built-in checkpoint: do not combine it with --checkpoint")
    if args.max_error_px is not None and not args.max_error_px > 0:
        raise ConvNeXtPoseError(f"--max-error-px must be a positive number of input pixels, got {args.max_error_px}")
    return run_export(options).exit_code
