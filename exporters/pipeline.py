"""`convnextpose export`: load + check the checkpoint, then build every requested format of the
format table (exporters/formats.py), each artifact verified against the PyTorch reference.

Every artifact is written into a private staging folder inside OUT, verified there, and only when
every requested stage passed are the files renamed into OUT and the manifest written. A failed or
interrupted run leaves OUT as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.errors import ConvNeXtPoseError, ExportError
from common.tables import format_table
from exporters.contract import InputContract, fold_normalization
from exporters.export_run import ExportOptions, ExportRun
from exporters.formats import resolve_formats
from exporters.inputs import inputs_for
from exporters.manifest import Artifact, Manifest, embedded_metadata, listed_files
from exporters.parity import reference_joints
from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.spec import spec_for
from models.synthetic.untrained import write_synthetic_checkpoint
from models.training.reference import CACHE_DIR, reference_checkpoint

log = logging.getLogger(__name__)

__all__ = ["ExportOptions", "ExportResult", "default_checkpoint", "run_export", "summary_table"]


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: Manifest
    artifacts: list[Artifact]


def default_checkpoint(variant: str, joints: int, seed: int, untrained: bool = False) -> Path:
    """The built-in checkpoint, cached under artifacts/checkpoints/: the trained-synthetic reference
    weights (trained once, ~15 min on 2 cores), or with ``untrained`` a synthetic untrained one."""
    spec = spec_for(variant, joints)
    if not untrained:
        return reference_checkpoint(spec, seed)
    path = CACHE_DIR / f"synthetic-untrained-{variant}-j{joints}-seed{seed}.pth.tar"
    if not path.exists():
        write_synthetic_checkpoint(spec, path, seed=seed)
    return path


def _publish(run: ExportRun, out_dir: Path, manifest: Manifest) -> None:
    """Move verified artifacts into OUT, write the manifest, drop files the old manifest listed."""
    previous = listed_files(out_dir)
    for artifact in run.artifacts:
        src, dst = run.staging / artifact.file, out_dir / artifact.file
        if dst.is_dir():  # .mlpackage is a folder: os.replace cannot overwrite a non-empty one
            os.replace(dst, run.staging / f".old-{artifact.file}")
        os.replace(src, dst)
    manifest.write(out_dir)
    for name in previous - manifest.files:
        stale = out_dir / name
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def _load(options: ExportOptions) -> LoadedCheckpoint:
    checkpoint = options.checkpoint
    if checkpoint is None:
        variant = options.variant or "S"
        checkpoint = default_checkpoint(variant, options.joints, options.seed, options.untrained_default)
        log.warning("no checkpoint given: using the built-in %s %s checkpoint (%s); it localises joints on "
                    "synthetic figures only -- export your released checkpoint with --checkpoint for real photos",
                    "UNTRAINED synthetic" if options.untrained_default else "trained-synthetic reference", variant,
                    checkpoint)
    loaded = load_checkpoint(checkpoint, options.variant, options.joints, options.num_upsample)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    if loaded.trained_synthetic:
        log.warning("checkpoint %s was trained on the synthetic task only: parity is judged on that task's images",
                    loaded.path)
    elif loaded.synthetic:
        log.warning("checkpoint %s is synthetic (%s): NOT a trained pose model", loaded.path, loaded.synthetic["kind"])
    return loaded


def run_export(options: ExportOptions) -> ExportResult:
    formats = resolve_formats(options.formats)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = _load(options)
    spec = loaded.spec
    contract = InputContract.for_spec(spec, options.fold_normalization)
    model = fold_normalization(loaded.build_model()) if options.fold_normalization else loaded.build_model()
    inputs = inputs_for(loaded, options.images_dir, options.seed)
    reference = reference_joints(loaded, inputs.images)
    timings["load"] = time.perf_counter() - start
    log.info("loaded %s (%s, %s params); verification set: %d inputs", loaded.path, spec.name,
             f"{spec.params:,}", len(inputs))

    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    run = ExportRun(options, loaded, contract, model, inputs, reference, staging,
                    embedded_metadata(loaded, contract), f"convnextpose-{spec.name}")
    try:
        for fmt in tqdm(formats, desc="export", unit="stage", disable=None):
            log.info("stage %s ...", fmt.name)
            t0 = time.perf_counter()
            try:
                fmt.build(run, fmt)
            except ConvNeXtPoseError as exc:
                raise ExportError(f"stage '{fmt.name}' failed: {exc}") from None
            except Exception as exc:  # converter crashes: name the stage, keep the detail
                log.debug("stage %s crashed", fmt.name, exc_info=True)
                raise ExportError(f"stage '{fmt.name}' failed: {type(exc).__name__}: {exc}") from None
            timings[fmt.name] = time.perf_counter() - t0
            log.info("stage %s done in %.1f s", fmt.name, timings[fmt.name])
        timings["total"] = time.perf_counter() - start
        manifest = Manifest.build(loaded, contract, run.artifacts, timings, inputs.sources, inputs.judged_group,
                                  run.calibration, run.skipped)
        _publish(run, out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(summary_table(run.artifacts, out_dir, loaded))
    for stage, reason in run.skipped.items():
        print(f"skipped {stage}: {reason}")
    return ExportResult(out_dir, manifest, run.artifacts)


def summary_table(artifacts: list[Artifact], out_dir: Path, loaded: LoadedCheckpoint) -> str:
    rows, notes = [], []
    for a in artifacts:
        p = a.parity
        mark = ""
        if p.get("evaluated_by"):
            if p["evaluated_by"] not in notes:
                notes.append(p["evaluated_by"])
            mark = "*" * (notes.index(p["evaluated_by"]) + 1)
        rows.append((a.file, a.format, a.precision, f"{a.layout} {'x'.join(map(str, a.input_shape))}",
                     f"{a.bytes / 1e6:.1f}", f"{p['max_abs_px']:.2e}", f"{p['max_abs_input_px']:.2e}",
                     f"{p['gate']} {p['p99_xy_judged_px'] if p['gate'] == 'p99' else p['max_abs_px']:.2g} <= "
                     f"{p['tolerance_px']:g}", p["status"] + mark))
    table = format_table(("file", "format", "precision", "input", "size MB", "max |d| hm px", "input px", "gate",
                          "status"), rows)
    title = f"ConvNeXtPose {loaded.spec.name} -> {out_dir}"
    if loaded.synthetic:
        title += f"   [SYNTHETIC WEIGHTS: {loaded.synthetic['kind']}]"
    return "\n".join([title, table, *(f"{'*' * (i + 1)} parity by the {n}" for i, n in enumerate(notes))])
