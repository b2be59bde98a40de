"""The XS and S reference weights shipped in ``weights/``, so a fresh clone exports without training.

Each file is the trained-synthetic reference checkpoint (models.training.reference) with the
network stored in fp16 and no optimizer state -- the released layout otherwise
(``{'epoch', 'network': module.-prefixed keys, 'synthetic': marker}``), ~2 bytes a parameter.
``weights/weights.json`` records each file's sha256 and its accuracy measured on the fp16 weights.

Rebuild (docs/checkpoints.md, weights/README.md):

    convnextpose make-checkpoint S /tmp/s.pth.tar --trained      # trains (~15 min on 2 cores)
    python -m models.training.shipped S /tmp/s.pth.tar             # fp16 copy + record in weights/
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from common.errors import CheckpointError
from common.files import file_digest, write_json_atomic
from common.paths import REPO_ROOT
from models.checkpoint import load_checkpoint
from models.synthetic.untrained import save_atomic

log = logging.getLogger(__name__)

WEIGHTS_DIR = REPO_ROOT / "weights"
RECORD = WEIGHTS_DIR / "weights.json"
#: What the shipped files are trained for, and the seed/joints they exist for.
SHIPPED_SEED, SHIPPED_JOINTS = 0, 18
EVAL_N = 200


def file_name(variant: str) -> str:
    return f"convnextpose-{variant}-trained-synthetic-fp16.pth"


def records() -> dict[str, dict]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def shipped_weights(variant: str, joints: int = SHIPPED_JOINTS, seed: int = SHIPPED_SEED) -> Path | None:
    """The shipped file for ``variant``, checked against its recorded sha256; None if none ships."""
    record = records().get(variant)
    if record is None or joints != SHIPPED_JOINTS or seed != SHIPPED_SEED:
        return None
    path = WEIGHTS_DIR / record["file"]
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped {variant} reference weights are missing (weights/weights.json "
                              "lists them); restore the file from git")
    if file_digest(path) != record["sha256"]:
        raise CheckpointError(f"{path}: sha256 differs from weights/weights.json -- the shipped weights were changed "
                              "or corrupted; restore them from git or rebuild (weights/README.md)")
    return path


def ship(variant: str, trained: Path, eval_n: int = EVAL_N) -> Path:
    """Write the fp16 copy of a trained-synthetic checkpoint into weights/ and record it."""
    from models.training.evaluate import evaluate_synthetic

    raw = torch.load(trained, map_location="cpu", weights_only=True)
    marker = dict(raw.get("synthetic") or {})
    if marker.get("kind") != "trained-synthetic":
        raise CheckpointError(f"{trained}: not a trained-synthetic checkpoint (make-checkpoint --trained writes one)")
    network = {k: v.half() if v.is_floating_point() else v for k, v in raw["network"].items()}
    out = WEIGHTS_DIR / file_name(variant)
    marker["storage"] = "fp16 network, no optimizer state (weights/ of the repository)"
    save_atomic({"epoch": raw.get("epoch"), "network": network, "synthetic": marker}, out)
    loaded = load_checkpoint(out, variant)
    report = evaluate_synthetic(loaded.build_model(), n=eval_n, seed=SHIPPED_SEED)
    record = {**records(), variant: {
        "file": out.name, "sha256": loaded.sha256, "bytes": out.stat().st_size, "params": loaded.spec.params,
        "eval_n": report.n, "eval_seed": report.seed, "eval_mean_px": round(report.mean_px, 4),
        "eval_p99_px": round(report.p99_px, 4), "eval_mean_depth_bins": round(report.mean_depth_bins, 4),
        "trained_from": {k: marker.get(k) for k in ("steps", "train_seconds", "eval_mean_px", "schedule")},
    }}
    write_json_atomic(record, RECORD)
    log.info("shipped %s: %s (%.1f MB), mean %.3f px on %d fresh images", variant, out, out.stat().st_size / 1e6,
             report.mean_px, report.n)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Store a trained-synthetic checkpoint in weights/ as fp16, "
                                            "with its record.")
    p.add_argument("variant", choices=("XS", "S"))
    p.add_argument("trained", type=Path, help="checkpoint written by make-checkpoint --trained")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ship(args.variant, args.trained)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
