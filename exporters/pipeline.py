"""`convnextpose export`: load + check -> ONNX -> simplified ONNX -> TFLite fp32/fp16 -> CoreML.

Every artifact is written into a private staging folder inside OUT, verified there against the
PyTorch reference, and only when every requested stage passed are the files renamed into OUT
and the manifest written. A failed or interrupted run leaves OUT as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from exporters import to_coreml, to_onnx, to_tflite, to_tflite_int8
from exporters.calibration import choose_calibration
from exporters.contract import InputContract, fold_normalization
from exporters.images import InputSet, inputs_for
from exporters.manifest import (
    MANIFEST_NAME,
    Artifact,
    build_manifest,
    embedded_metadata,
    path_digest,
    read_manifest,
    write_json_atomic,
)
from exporters.mobile_graph import for_xnnpack
from exporters.runtimes import coreml_runner, run_onnx, run_tflite
from exporters.simplify import simplify_onnx
from exporters.tolerances import CALIBRATED
from exporters.verify import check, reference_joints
from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.errors import ConvNeXtPoseError, ExportError
from models.network import ConvNeXtPose
from models.spec import spec_for
from models.synthetic import write_synthetic_checkpoint
from models.trained_checkpoint import CACHE_DIR, reference_checkpoint

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite", "tflite-int8", "coreml")


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    variant: str | None = None
    checkpoint: Path | None = None
    joints: int = 18
    num_upsample: int | None = None
    formats: tuple[str, ...] = FORMATS
    fold_normalization: bool = True
    opset: int = to_onnx.DEFAULT_OPSET
    dynamic_batch: bool = False
    simplifier: str = "onnxsim"
    images_dir: Path | None = None
    calib_dir: Path | None = None  # int8 calibration photos (default: see calibration.choose_calibration)
    seed: int = 0
    threads: int = 2
    untrained_default: bool = False  # without a checkpoint: untrained synthetic weights instead of the trained reference


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: dict
    artifacts: list[Artifact]


@dataclass
class _Run:
    """State shared by the stages of one export."""

    options: ExportOptions
    loaded: LoadedCheckpoint
    contract: InputContract
    model: ConvNeXtPose  # what the artifacts contain (normalisation folded or not)
    inputs: InputSet
    reference: np.ndarray  # PyTorch fp32 joints of the original model on normalised inputs
    staging: Path
    metadata: dict[str, str]
    stem: str
    artifacts: list[Artifact] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it produced nothing
    calibration: dict | None = None  # manifest record of the int8 calibration set

    @property
    def artifact_inputs(self) -> np.ndarray:
        return self.contract.prepare(self.inputs.images)

    def verify(self, path: Path, fmt: str, precision: str, layout: str, run: Callable,
               details: dict | None = None, evaluated_by: str | None = None,
               judged: np.ndarray | None = None) -> Artifact:
        judged = self.inputs.judged_mask() if judged is None else judged
        report = check(run(path, self.artifact_inputs), self.reference, self.loaded.spec, fmt, precision, judged)
        parity = report.to_dict() | ({"evaluated_by": evaluated_by} if evaluated_by else {})
        if not report.passed:
            raise ExportError(f"parity check failed for {path.name} ({fmt} {precision}"
                              f"{', ' + evaluated_by if evaluated_by else ''}): {report.describe()}")
        size, sha = path_digest(path)
        n, c, h, w = self.contract.shape_nchw
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        artifact = Artifact(path.name, fmt, precision, layout, shape, size, sha, parity, details or {})
        self.artifacts.append(artifact)
        return artifact


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


# ---- stages ------------------------------------------------------------------------------------
def _stage_onnx(run: _Run) -> None:
    o = run.options
    raw = run.staging / f"{run.stem}.onnx"
    details = to_onnx.export_onnx(run.model, run.contract, raw, run.metadata, o.opset, o.dynamic_batch)
    run.verify(raw, "onnx", "fp32", "NCHW", lambda p, x: run_onnx(p, x, o.threads), details)
    simplified = run.staging / f"{run.stem}.sim.onnx"
    details = simplify_onnx(raw, simplified, o.simplifier, run.metadata)
    log.info("simplified with %s: %d -> %d nodes", o.simplifier, details["nodes_before"], details["nodes_after"])
    run.verify(simplified, "onnx-simplified", "fp32", "NCHW", lambda p, x: run_onnx(p, x, o.threads), details)


def _stage_tflite(run: _Run) -> None:
    o = run.options
    # TFLite gets its own ONNX, from a graph rewritten for XNNPACK's fast kernels (mobile_graph.py).
    mobile_model, rewrites = for_xnnpack(run.model)
    work = run.staging / ".work" / "tflite"
    work.mkdir(parents=True)
    onnx_path = work / "mobile.onnx"
    to_onnx.export_onnx(mobile_model, run.contract, onnx_path, run.metadata, o.opset, False)
    simplify_onnx(onnx_path, onnx_path, o.simplifier, run.metadata)
    photos = run.inputs.images[run.inputs.group_masks()["photos"]]
    saved_model = to_tflite.onnx_to_saved_model(onnx_path, work, photos)
    for precision in to_tflite.PRECISIONS:
        path = run.staging / f"{run.stem}_{precision}.tflite"
        path.write_bytes(to_tflite.embed_metadata(to_tflite.saved_model_to_tflite(saved_model, precision), run.metadata))
        ops = to_tflite.check_builtin_only(path)
        run.verify(path, "tflite", precision, "NHWC", lambda p, x: run_tflite(p, x, o.threads),
                   {"ops": ops, "signature": to_tflite.SIGNATURE_KEY, "graph_rewrites": rewrites})


def _untrained_skip(run: _Run, what: str) -> bool:
    """Integer artifacts are built for trained weights only: on untrained ones, whose heatmaps are
    multi-modal noise, their error figure would measure the random weights, not the conversion."""
    if not run.loaded.synthetic or run.loaded.trained_synthetic:
        return False
    kind = run.loaded.synthetic.get("kind")
    run.skipped[what] = (f"untrained {kind} weights: their multi-modal heatmaps make any int8 error figure "
                         "meaningless (README 'Integer artifacts'); export a trained checkpoint or the "
                         "trained-synthetic reference")
    log.warning("%s skipped: %s", what, run.skipped[what])
    return True


def _stage_tflite_int8(run: _Run) -> None:
    """int8-dynamic, int8-w8a8-mixed, int8-w8a8-pw from the verified fp32 .tflite (exporters/to_tflite_int8.py)."""
    o = run.options
    if _untrained_skip(run, "tflite-int8"):
        return
    fp32 = run.staging / f"{run.stem}_fp32.tflite"
    choice = choose_calibration(run.loaded, run.inputs, o.calib_dir, o.seed)
    run.calibration = choice.to_manifest()
    log.info("int8 calibration: %s (sha256 %s); judged on %s", choice.calibration.description,
             choice.calibration.sha256[:12], choice.judged_description)
    # One calibration pass serves both static recipes: pw keeps more ops float, so it needs a subset
    # of w8a8-mixed's ranges (byte-identical file to calibrating it on its own, measured on XS).
    qsvs = to_tflite_int8.calibrate(fp32, choice.calibration, to_tflite_int8.W8A8_MIXED, o.threads)
    builds = {
        "int8-dynamic": (lambda: to_tflite_int8.dynamic_range(fp32),
                         to_tflite_int8.describe_dynamic()),
        **{recipe.name: (lambda r=recipe: to_tflite_int8.quantize_static(fp32, choice.calibration, r, o.threads, qsvs),
                         to_tflite_int8.describe_static(recipe))
           for recipe in (to_tflite_int8.W8A8_MIXED, to_tflite_int8.W8A8_POINTWISE)},
    }
    for precision, (build, recipe) in builds.items():
        path = run.staging / f"{run.stem}_{precision}.tflite"
        path.write_bytes(build())
        ops = to_tflite.check_builtin_only(path)
        partitions, delegated, total = to_tflite_int8.delegated_nodes(path, o.threads)
        run.verify(path, "tflite", precision, "NHWC", lambda p, x: run_tflite(p, x, o.threads),
                   {"ops": ops, "signature": to_tflite.SIGNATURE_KEY, "recipe": recipe,
                    "xnnpack": {"partitions": partitions, "delegated_nodes": delegated, "nodes": total},
                    "calibration_sha256": choice.calibration.sha256 if precision in CALIBRATED else None},
                   judged=choice.judged if precision in CALIBRATED else None)


def _stage_coreml(run: _Run) -> None:
    evaluate, evaluated_by = coreml_runner()
    targets = [to_coreml.MLPACKAGE, to_coreml.MLMODEL]
    # palette6 is not shipped: 1.37 px p99 on the trained XS reference (README "Integer artifacts")
    if not _untrained_skip(run, "coreml int8-weights"):
        targets.append(to_coreml.MLPACKAGE_INT8)
    for target in targets:
        path = run.staging / f"{run.stem}{target.suffix}"
        details = to_coreml.export_coreml(run.model, run.contract, path, target, run.metadata)
        run.verify(path, target.format, target.precision, "NCHW", evaluate, details, evaluated_by)


STAGES: dict[str, Callable[[_Run], None]] = {"onnx": _stage_onnx, "tflite": _stage_tflite,
                                              "tflite-int8": _stage_tflite_int8, "coreml": _stage_coreml}


# ---- publishing --------------------------------------------------------------------------------
def _publish(run: _Run, out_dir: Path, manifest: dict) -> None:
    """Move verified artifacts into OUT, write the manifest, drop files the old manifest listed."""
    previous = read_manifest(out_dir) or {}
    for artifact in run.artifacts:
        src, dst = run.staging / artifact.file, out_dir / artifact.file
        if dst.is_dir():  # .mlpackage is a folder: os.replace cannot overwrite a non-empty one
            trash = run.staging / f".old-{artifact.file}"
            os.replace(dst, trash)
        os.replace(src, dst)
    write_json_atomic(manifest, out_dir / MANIFEST_NAME)
    current = {a.file for a in run.artifacts}
    for old in previous.get("artifacts", []):
        stale = out_dir / Path(old.get("file", "")).name
        if old.get("file") and old["file"] not in current and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def run_export(options: ExportOptions) -> ExportResult:
    unknown = [f for f in options.formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if "tflite-int8" in options.formats and "tflite" not in options.formats:
        raise ExportError("format tflite-int8 is quantised from the verified fp32 .tflite: add tflite to --formats")
    timings: dict[str, float] = {}
    start = time.perf_counter()

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
    run = _Run(options, loaded, contract, model, inputs, reference, staging,
               embedded_metadata(loaded, contract), f"convnextpose-{spec.name}")
    try:
        stages = [f for f in FORMATS if f in options.formats]
        for name in tqdm(stages, desc="export", unit="stage", disable=None):
            log.info("stage %s ...", name)
            t0 = time.perf_counter()
            try:
                STAGES[name](run)
            except ConvNeXtPoseError as exc:
                raise ExportError(f"stage '{name}' failed: {exc}") from None
            except Exception as exc:  # converter crashes: name the stage, keep the detail
                log.debug("stage %s crashed", name, exc_info=True)
                raise ExportError(f"stage '{name}' failed: {type(exc).__name__}: {exc}") from None
            timings[name] = time.perf_counter() - t0
            log.info("stage %s done in %.1f s", name, timings[name])
        timings["total"] = time.perf_counter() - start
        layouts = {a.format: a.layout for a in run.artifacts}
        manifest = build_manifest(loaded, contract, run.artifacts, timings, inputs.sources, layouts)
        manifest["judged_on"] = inputs.judged_group
        if run.calibration:
            manifest["calibration"] = run.calibration
        if run.skipped:
            manifest["skipped"] = run.skipped
        _publish(run, out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(summary_table(run.artifacts, out_dir, loaded))
    for stage, reason in run.skipped.items():
        print(f"skipped {stage}: {reason}")
    return ExportResult(out_dir, manifest, run.artifacts)


def summary_table(artifacts: list[Artifact], out_dir: Path, loaded: LoadedCheckpoint) -> str:
    rows = [("file", "format", "precision", "input", "size MB", "max |d| hm px", "input px", "gate", "status")]
    notes = []
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"ConvNeXtPose {loaded.spec.name} -> {out_dir}"
    if loaded.synthetic:
        title += f"   [SYNTHETIC WEIGHTS: {loaded.synthetic['kind']}]"
    return "\n".join([title, *lines, *(f"{'*' * (i + 1)} parity by the {n}" for i, n in enumerate(notes))])
