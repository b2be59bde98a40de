"""`convnextpose inspect`: a checkpoint's architecture, inferred from its tensors and checked against a variant."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.arguments import variant
from models.spec import DEFAULT_JOINTS

NAME = "inspect"
PRELOAD = None  # loads no converter


def add_to(sub) -> None:
    p = sub.add_parser(NAME, help="infer a checkpoint's architecture and check it against a variant")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--variant", type=variant, help="variant the checkpoint must match (XS/S/M/L)")
    p.add_argument("--joints", type=int, default=DEFAULT_JOINTS, help="number of joints J (default 18)")
    p.add_argument("--upsample", type=int, help="upsampling layers of a custom head (no weights tell it)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
        f"synthetic       {synthetic_words(loaded.synthetic)}",
    ]
    lines += [f"warning         {w}" for w in loaded.warnings]
    print("\n".join(lines))
    return 0


def synthetic_words(marker: dict | None) -> str:
    if not marker:
        return "no"
    from models.checkpoint import TRAINED_KIND

    if marker.get("kind") == TRAINED_KIND:
        return (f"trained-synthetic: trained on synthetic figures only ({marker.get('steps')} steps, eval mean "
                f"{marker.get('eval_mean_px', float('nan')):.2f} px); NOT a model of real photos")
    return f"{marker.get('kind')} (NOT a trained model)"
