"""`convnextpose export`: load + check the checkpoint, then build every requested format of the
format table (exporters/formats.py), each artifact judged (judging/gates.py).

Every artifact is written into a private staging folder beside OUT and judged there; those that
pass, the golden vectors, the model card and the manifest (listing the published and the rejected
artifacts with their reasons) make the new content of OUT, which replaces the old in one step
(exporters/pipeline/publish.py). One rejected artifact does not hold back the others. A run that publishes
nothing, fails, is interrupted or killed leaves OUT as it was.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import ConvNeXtPoseError, ExportError
from common.images import list_images, read_rgb
from common.tables import format_table
from exporters.app_files import golden, model_card
from exporters.app_files.metadata import embedded_metadata
from exporters.converters import to_onnx, to_tflite
from exporters.converters.to_coreml import INPUT_KINDS
from exporters.formats import ExportFormat, find_kind, get_format, resolve_formats
from exporters.pipeline.export_run import ExportOptions, ExportRun
from exporters.pipeline.publish import check_out, clear_leftovers, new_staging, out_lock, publish
from exporters.pipeline.side_stage import SideStage, can_fork
from exporters.pipeline.stages import NOT_BUILT
from judging.cross_isa import judged_golden_rows, verify_on_arm64
from judging.gates import (
    BORDERLINE,
    EMULATION_FACTOR,
    FLOOR_INPUT_PX,
    NOISE_FACTOR,
    Budgets,
    CostInterval,
    interval_cell,
    kind_label,
)
from judging.golden import GOLDEN_DIR
from judging.inputs import gpu_rows, inputs_for
from judging.manifest import Artifact, Manifest, Rejection, listed_files
from judging.more_images import MAX_JUDGED_IMAGES
from judging.on_gpu import verify_on_gpu, with_gpu_checks
from judging.references import References
from judging.verify import with_arm64_checks
from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.contract import InputContract
from models.folding import fold_normalization, without_batchnorm
from models.spec import NUM_HEAD_LAYERS, spec_for
from models.synthetic.untrained import write_synthetic_checkpoint
from models.training.reference import CACHE_DIR, reference_checkpoint
from models.training.shipped import shipped_weights
from runtimes.arm64.target import FP16_CORE, cpu_model

log = logging.getLogger(__name__)

CONVERSION_FAILED = "conversion failed"
FAILS_ON_ARM64 = "fails on arm64"
FAILS_ON_GPU = "fails on the GPU accelerator"
#: ONNX opsets this export is known to produce and check: Softmax over the last axis needs 13+;
#: the TorchScript exporter of torch 2.13 goes up to 20.
MIN_OPSET, MAX_OPSET = 13, 20

__all__ = ["ExportOptions", "ExportResult", "default_checkpoint", "run_export", "summary_table"]


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest: Manifest
    artifacts: list[Artifact]  # published
    rejected: list[Rejection]

    @property
    def exit_code(self) -> int:
        """0: every requested artifact published; 3: some rejected, the rest published."""
        return 3 if self.rejected else 0


def default_checkpoint(variant: str, joints: int, seed: int, untrained: bool = False) -> Path:
    """The built-in checkpoint: the trained-synthetic reference weights (shipped in weights/ for XS
    and S; trained once and cached under artifacts/checkpoints/ for the others), or with
    ``untrained`` a synthetic untrained one."""
    spec = spec_for(variant, joints)
    if not untrained:
        return shipped_weights(variant, joints, seed) or reference_checkpoint(spec, seed)
    path = CACHE_DIR / f"synthetic-untrained-{variant}-j{joints}-seed{seed}.pth.tar"
    if not path.exists():
        write_synthetic_checkpoint(spec, path, seed=seed)
    return path


def _golden_rows(run: ExportRun) -> list[int]:
    inputs = run.inputs
    return golden.pick_rows(inputs.judged_mask(), inputs.group_masks().get("photos", np.zeros(len(inputs), bool)))


def _tag_fp16_arithmetic(run: ExportRun, manifest: Manifest) -> None:
    """The fp16 .tflite tagged for fp16 arithmetic (``reduced_precision_support`` = fp16accfp16: XNNPACK runs it in
    fp16 on ARMv8.2+ cores, about half the instructions) when, tagged, it keeps its fp16 budget on the emulated
    Cortex-A76 in that arithmetic; otherwise it stays as converted (fp16 weights, fp32 arithmetic) and the
    manifest says why. The tagged file is then judged again here and, with the others, on every emulated core
    (the A53, without FP16 arithmetic, runs it in fp32)."""
    art = run.published("tflite", "fp16")
    if art is None:
        return
    path = run.staging / art.file
    tagged = run.staging / ".work" / f"fp16-arithmetic-{art.file}"
    tagged.parent.mkdir(parents=True, exist_ok=True)
    tagged.write_bytes(to_tflite.with_reduced_precision(path.read_bytes(), to_tflite.FP16_ARITHMETIC))
    rows = _golden_rows(run)
    candidate = replace(art, file=tagged.name)
    (check,) = verify_on_arm64(tagged.parent, [candidate], run.artifact_inputs[rows],
                               run.references.subset(np.asarray(rows)), judged_golden_rows(manifest, run.inputs, rows),
                               {tagged.name: run.outputs[art.file][rows]}, run.budgets, cpus=(cpu_model(FP16_CORE),),
                               timeout_s=run.options.verify_arch_timeout_s)[tagged.name]
    record = {"tag": to_tflite.FP16_ARITHMETIC, "judged_on": check.record(), "tagged": check.passed}
    if not check.passed:
        log.warning("%s: not tagged for fp16 arithmetic: on %s in fp16 %s", art.file, check.cpu, check.reason)
        run.artifacts[run.artifacts.index(art)] = replace(art, details={**art.details, "fp16_arithmetic": record})
        return
    index = run.artifacts.index(art)
    run.artifacts.remove(art)
    run.outputs.pop(art.file, None)
    path.write_bytes(tagged.read_bytes())
    again = run.verify(path, find_kind("tflite", "fp16"), {**art.details, "fp16_arithmetic": record})
    if again is not None:  # judged again here (this CPU runs it in fp32 unless it has fp16 arithmetic too)
        run.artifacts.insert(index, run.artifacts.pop())
        log.info("%s: tagged for fp16 arithmetic (%s on %s in fp16)", art.file, check.headline, check.cpu)


def _verify_arm64(run: ExportRun, manifest: Manifest) -> None:
    """``--verify-arch arm64``: every published .tflite/.onnx/.ort judged again on the emulated phone cores, on the
    golden inputs (judging/cross_isa.py); a file failing on any core is rejected, the others carry the records.
    First the fp16 .tflite is tagged for fp16 arithmetic if it keeps its budget in it (_tag_fp16_arithmetic)."""
    _tag_fp16_arithmetic(run, manifest)
    rows = _golden_rows(run)
    refs = run.references.subset(np.asarray(rows))
    judged = judged_golden_rows(manifest, run.inputs, rows)
    checks = verify_on_arm64(run.staging, run.artifacts, run.artifact_inputs[rows], refs, judged,
                             {f: j[rows] for f, j in run.outputs.items()}, run.budgets,
                             timeout_s=run.options.verify_arch_timeout_s)
    kept = []
    for art in run.artifacts:
        art = with_arm64_checks(art, checks.get(art.file))
        failures = [c for c in checks.get(art.file, []) if not c.passed]
        if not failures:
            kept.append(art)
            continue
        detail = "; ".join(f"on {c.cpu}: {c.reason}" for c in failures)
        run.rejected.append(Rejection(art.file, art.format, art.precision, FAILS_ON_ARM64, detail, art.verdict,
                                      {"verified_on": list(art.verified_on)}))
        run.outputs.pop(art.file, None)
        log.warning("%s: rejected -- %s: %s", art.file, FAILS_ON_ARM64, detail)
    run.artifacts[:] = kept


def _verify_gpu(run: ExportRun, manifest: Manifest) -> None:
    """``--verify-gpu``: every published .tflite judged again on LiteRT's GPU accelerator with its default (fp16)
    options, on the judged and golden inputs (judging/on_gpu.py); a file failing there is rejected, the others
    carry the record (and the golden delegate tolerance it supports)."""
    rows = gpu_rows(run.inputs, _golden_rows(run))
    checks = verify_on_gpu(run.staging, run.artifacts, run.artifact_inputs[rows], run.references.subset(rows),
                           judged_golden_rows(manifest, run.inputs, list(rows)),
                           {f: j[rows] for f, j in run.outputs.items()}, run.budgets, run.inputs.units()[rows],
                           timeout_s=run.options.verify_arch_timeout_s)
    kept = []
    for art in run.artifacts:
        check = checks.get(art.file)
        art = with_gpu_checks(art, check)
        if check is None or check.passed:
            kept.append(art)
            continue
        run.rejected.append(Rejection(art.file, art.format, art.precision, FAILS_ON_GPU, check.reason, art.verdict,
                                      {"verified_on": list(art.verified_on)}))
        run.outputs.pop(art.file, None)
        log.warning("%s: rejected -- %s: %s", art.file, FAILS_ON_GPU, check.reason)
    run.artifacts[:] = kept


def _app_files(run: ExportRun, manifest: Manifest) -> None:
    """Golden vectors and the model card, written into staging beside the artifacts."""
    inputs = run.inputs
    rows = _golden_rows(run)
    golden.write(run.staging / GOLDEN_DIR, inputs.images[rows], run.artifact_inputs[rows],
                 [inputs.sources[i] for i in rows], {f: j[rows] for f, j in run.outputs.items()}, run.artifacts,
                 run.references.fp32[rows], manifest)
    model_card.write(run.staging, manifest)


def _finish_staging(run: ExportRun, manifest: Manifest) -> None:
    """Leave in staging exactly what the manifest lists (rejected files and work folders go), manifest last."""
    keep = manifest.files
    for entry in run.staging.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    manifest.write(run.staging)


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


def _validate(options: ExportOptions) -> list[ExportFormat]:
    """Everything that can be refused before any work is."""
    formats = resolve_formats(options.formats)
    if options.coreml_input_kind not in INPUT_KINDS:
        raise ExportError(f"--coreml-input {options.coreml_input}: choose from {', '.join(INPUT_KINDS)}")
    if options.coreml_input_kind == "image" and not options.fold_normalization:
        raise ExportError("--coreml-input image needs the normalisation folded into the model (a Core ML image input "
                          "has one scale for all channels): drop --normalized-input or use --coreml-input tensor")
    if not MIN_OPSET <= options.opset <= MAX_OPSET:
        raise ExportError(f"--opset {options.opset}: this export needs ONNX opset {MIN_OPSET} to {MAX_OPSET} "
                          f"(default {to_onnx.DEFAULT_OPSET})")
    if options.num_upsample is not None and not 0 <= options.num_upsample <= NUM_HEAD_LAYERS:
        raise ExportError(f"--upsample {options.num_upsample}: the head has {NUM_HEAD_LAYERS} layers, so 0 to "
                          f"{NUM_HEAD_LAYERS} of them can upsample")
    if options.joints < 1:
        raise ExportError(f"--joints {options.joints}: needs at least one joint")
    if options.calib_dir is not None:  # a bad --calib fails now, not after minutes
        for path in list_images(options.calib_dir, "calibration", ExportError):
            read_rgb(path, "calibration image", ExportError)
    if options.images_dir is not None:
        list_images(options.images_dir, "images", ExportError)
    if options.verify_arch == "arm64":
        from runtimes.arm64.target import ensure_ready

        ensure_ready()  # one line naming `make arm64`, before any work
    if options.verify_gpu:
        from runtimes.gpu.target import ensure_ready as gpu_ready

        gpu_ready()  # one line naming `make gpu`, before any work
    check_out(Path(options.out_dir))
    return formats


def run_export(options: ExportOptions) -> ExportResult:
    """Build every requested format; publish what passed. Raises ExportError (exit 2) when nothing could
    be published, or with ``strict`` when anything was rejected; OUT is then left as it was."""
    formats = _validate(options)
    out_dir = Path(options.out_dir)
    with out_lock(out_dir):
        clear_leftovers(out_dir)
        try:
            return _export(options, formats, out_dir)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ExportError(_disk_full(out_dir)) from None
            raise


def _disk_full(out_dir: Path) -> str:
    free = shutil.disk_usage(out_dir.parent).free / 1e6
    return (f"no space left on the device that holds {out_dir} ({free:.0f} MB free) while writing the export; "
            f"{out_dir} is unchanged -- free some space (an export of S needs ~200 MB) and run it again")


def _export(options: ExportOptions, formats: list[ExportFormat], out_dir: Path) -> ExportResult:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    loaded = _load(options)
    spec = loaded.spec
    contract = InputContract.for_spec(spec, options.fold_normalization)
    model = fold_normalization(loaded.build_model()) if options.fold_normalization else loaded.build_model()
    # every converter gets the BatchNorm-free form: ORT's NNAPI / Core ML providers reject a lone BatchNorm, and
    # PT2E's conv+BN fold is most of ExecuTorch's int8 lowering time
    model = without_batchnorm(model)
    inputs = inputs_for(loaded, options.images_dir, options.seed)
    references = References.of(loaded, inputs.images)
    log.info("loaded %s (%s, %s params); verification set: %d inputs; fp32 noise floor %.2g heatmap px",
             loaded.path, spec.name, f"{spec.params:,}", len(inputs), references.noise_px)
    timings["load"] = time.perf_counter() - start

    staging = new_staging(out_dir)
    run = ExportRun(options, loaded, contract, model, inputs, references, Budgets.uniform(options.max_error_px),
                    staging, embedded_metadata(loaded, contract), f"convnextpose-{spec.name}")
    beside: dict[str, SideStage] = {}
    done: set[str] = set()
    forking = len(formats) > 1 and can_fork()
    try:
        _start_ready(run, formats, done, beside, forking)
        for fmt in tqdm(formats, desc="export", unit="stage", disable=None):
            t0 = time.perf_counter()
            if fmt.name in beside:
                timings[fmt.name] = _merge(run, fmt, beside[fmt.name])
                log.info("stage %s done in %.1f s (beside the others; waited %.1f s for it)", fmt.name,
                         timings[fmt.name], time.perf_counter() - t0)
            else:
                _build(run, fmt)
                timings[fmt.name] = time.perf_counter() - t0
                log.info("stage %s done in %.1f s", fmt.name, timings[fmt.name])
            done.add(fmt.name)
            _start_ready(run, formats, done, beside, forking)

        def record() -> Manifest:
            return Manifest.build(loaded, contract, run.artifacts, timings, inputs.record(options.seed),
                                  gates_record(references, run.budgets, options.reject_borderline), run.rejected,
                                  run.calibration, run.skipped,
                                  extras=(*run.extras, GOLDEN_DIR, model_card.MODEL_CARD))

        if options.verify_arch == "arm64" and run.artifacts:
            t0 = time.perf_counter()
            _verify_arm64(run, record())
            timings["verify-arm64"] = time.perf_counter() - t0
            log.info("stage verify-arm64 done in %.1f s", timings["verify-arm64"])
        if options.verify_gpu and run.artifacts:
            t0 = time.perf_counter()
            _verify_gpu(run, record())
            timings["verify-gpu"] = time.perf_counter() - t0
            log.info("stage verify-gpu done in %.1f s", timings["verify-gpu"])
        timings["total"] = time.perf_counter() - start
        if not run.artifacts or (options.strict and run.rejected):
            raise ExportError(_nothing_published(run, options.strict))
        manifest = record()
        _app_files(run, manifest)
        _finish_staging(run, manifest)
        publish(staging, out_dir, listed_files(out_dir))
    finally:
        for side in beside.values():
            side.stop()  # merged ones are already gone
        shutil.rmtree(staging, ignore_errors=True)
    print(summary_table(manifest, out_dir))
    return ExportResult(out_dir, manifest, run.artifacts, run.rejected)


def _start_ready(run: ExportRun, formats: list[ExportFormat], done: set[str], beside: dict[str, SideStage],
                 forking: bool) -> None:
    """Fork every stage built beside the others whose required stages are done; they are merged where they
    stand in the build order, so the manifest and every verdict are those of an inline build."""
    if not forking:
        return
    for fmt in formats:
        if fmt.beside and fmt.name not in beside and fmt.name not in done and set(fmt.requires) <= done:
            if fmt.prepare is not None:
                try:
                    fmt.preparation()(run)
                except Exception:  # the stage meets the same error in its own process and is rejected for it
                    log.debug("preparing stage %s failed", fmt.name, exc_info=True)
            beside[fmt.name] = SideStage(run, fmt, _build)


def _build(run: ExportRun, fmt: ExportFormat) -> None:
    """One stage; a crash rejects the artifacts it had not settled yet, and the export goes on."""
    missing = [r for r in fmt.requires if not any(run.published(k.format, k.precision)
                                                  for k in get_format(r).artifacts)]
    if missing:
        for kind in fmt.artifacts:
            run.reject(kind, NOT_BUILT, f"it is built from the {', '.join(missing)} artifacts, none of which "
                                        "was published")
        return
    log.info("stage %s ...", fmt.name)
    try:
        fmt.stage()(run, fmt)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise  # not this stage's fault: the whole export stops (run_export says so)
        _stage_crashed(run, fmt, exc)
    except Exception as exc:  # converter crashes: name the stage, keep the detail, keep going
        _stage_crashed(run, fmt, exc)


def _merge(run: ExportRun, fmt: ExportFormat, side: SideStage) -> float:
    """What a stage built beside the others recorded; its process dying is a crash of that stage."""
    t0 = time.perf_counter()
    try:
        return side.merge(run)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        _stage_crashed(run, fmt, exc)
    except Exception as exc:
        _stage_crashed(run, fmt, exc)
    return time.perf_counter() - t0


def _stage_crashed(run: ExportRun, fmt: ExportFormat, exc: Exception) -> None:
    log.debug("stage %s crashed", fmt.name, exc_info=True)
    detail = str(exc) if isinstance(exc, ConvNeXtPoseError) else f"{type(exc).__name__}: {exc}"
    for kind in fmt.artifacts:
        if not run.settled(kind):
            run.reject(kind, CONVERSION_FAILED, f"stage '{fmt.name}' failed: {detail}")


def _nothing_published(run: ExportRun, strict: bool) -> str:
    head = ("--strict: an artifact was rejected, so nothing was published" if strict and run.artifacts
            else "no artifact passed its checks, so nothing was published")
    lines = [f"  {r.file}: {r.reason}: {r.detail}" for r in run.rejected]
    return "\n".join([f"{head}; {run.options.out_dir} is unchanged:", *lines])


def gates_record(references: References, budgets: Budgets, reject_borderline: bool = False) -> dict:
    """The manifest's ``gates``: what every verdict was measured against."""
    return {"fp32_noise_floor_px": references.noise_px, "noise_factor": NOISE_FACTOR,
            "floor_input_px": FLOOR_INPUT_PX, "budgets_input_px": budgets.to_dict(),
            "cost_statistic": "p99 of the 2-D joint error vs PyTorch fp32 over the judged inputs, input px",
            "emulation_factor": EMULATION_FACTOR, "max_judged_images": MAX_JUDGED_IMAGES,
            "reject_borderline": reject_borderline}


def _verdict_cells(v: dict) -> tuple[str, str, str]:
    conv = v.get("conversion")
    check = f"{conv['max_input_px']:.2g} <= {conv['tolerance_input_px']:.2g}" if conv and conv["passed"] else (
        f"{conv['max_input_px']:.2g} > {conv['tolerance_input_px']:.2g}" if conv else "-")
    cost = v["cost"]["p99_input_px"]
    budget = v.get("budget_input_px")
    recorded = v.get("cost_interval")
    evidence = CostInterval(**recorded).evidence if recorded else ""
    label = kind_label(v) if v.get("cost_verdict") == BORDERLINE else ""
    notes = ", ".join(x for x in (label, "" if evidence in label else evidence) if x)
    cost_cell = f"{cost:.2g}" + (f" {interval_cell(v)}" if recorded else "") + (
        f" {'<=' if cost <= budget else '>'} {budget:g}" if budget is not None else "") + (
        f" ({notes})" if notes else "")
    sens = v.get("sensitivity")
    return check, cost_cell, f"{sens['p99_input_px']:.2g}" if sens else "-"


def summary_table(manifest: Manifest, out_dir: Path) -> str:
    rows, notes = [], []
    for a in manifest.artifacts:
        by = a.verdict.get("evaluated_by")
        if by and by not in notes:
            notes.append(by)
        mark = "*" * (notes.index(by) + 1) if by else ""
        rows.append((a.file, a.format, a.precision, f"{a.bytes / 1e6:.1f}", *_verdict_cells(a.verdict),
                     "published" + mark))
    for r in manifest.rejected:
        cells = _verdict_cells(r.verdict) if r.verdict else ("-", "-", "-")
        rows.append((r.file, r.format, r.precision, "-", *cells, f"REJECTED: {r.reason}"))
    table = format_table(("file", "format", "precision", "MB", "fp32 check, input px", "cost p99 [95 % interval] px",
                          "PyTorch same precision", "status"), rows)
    title = f"ConvNeXtPose {manifest.spec.name} -> {out_dir}"
    info = manifest.checkpoint.get("synthetic_info")
    if info:
        title += f"   [SYNTHETIC WEIGHTS: {info['kind']}]"
    lines = [title, table, *(f"{'*' * (i + 1)} measured by the {n}" for i, n in enumerate(notes))]
    lines += [f"rejected {r.file}: {r.reason}: {r.detail}" for r in manifest.rejected]
    lines += [f"skipped {stage}: {reason}" for stage, reason in manifest.skipped.items()]
    lines += [adaptive_note(a.file, a.details["adaptive"]) for a in manifest.artifacts if "adaptive" in a.details]
    return "\n".join(lines)


def adaptive_note(file: str, adaptive: dict) -> str:
    """What an adaptive int8 file kept float, and what that bought, in one line."""
    last = adaptive["attempts"][-1]
    layers = adaptive["float_layers"]
    return (f"adapted {file}: {len(layers)} of {len(adaptive['sensitivity_p99_input_px'])} layers kept float "
            f"({', '.join(layers)}): cost p99 {last['cost_p99_input_px']:.3g} input px, "
            f"{last['float_mac_share']:.0%} of the multiply-accumulates float; per-layer sensitivity in manifest.json")
