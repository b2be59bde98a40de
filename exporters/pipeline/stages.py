"""How each format of the table is built: the stage functions the pipeline calls.

A stage converts with the ``to_*`` modules (pure converters: model in, file out), writes each file
into the run's staging folder and hands it to ``ExportRun.verify``. The format table
(``exporters/formats.py``) names one stage per format.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from common import quiet
from exporters.app_files import tflite_metadata
from exporters.app_files.metadata import app_metadata
from exporters.converters import (
    int8_adaptive,
    to_coreml,
    to_executorch,
    to_onnx,
    to_onnx_int8,
    to_ort,
    to_tflite,
    to_tflite_int8,
)
from exporters.converters.calibration import CalibrationChoice, choose_calibration
from exporters.converters.mobile_graph import for_executorch, for_xnnpack
from exporters.converters.onnx_mobile import for_mobile_providers
from exporters.converters.simplify import simplify_onnx
from exporters.formats import EXECUTORCH_COREML, TARGETS, ArtifactKind, ExportFormat, find_kind
from exporters.pipeline.export_run import ExportRun
from judging.gates import OVER_BUDGET
from judging.judged_rows import CALIBRATED
from judging.manifest import Artifact
from judging.parity import parity_stats
from models.preprocessing import normalise
from runtimes import open_session
from runtimes.litert import SIGNATURE_KEY, delegated_nodes

log = logging.getLogger(__name__)

NOT_BUILT = "not built"
#: The fp32 flatbuffer before the standard metadata and its packed files were added.
QUANTIZER_SOURCE = "fp32_flatbuffer.tflite"


def build_onnx(run: ExportRun, fmt: ExportFormat) -> None:
    """The raw export, then the simplified graph; each verified in ONNX Runtime."""
    o = run.options
    raw_kind, simplified_kind = fmt.artifacts
    raw = run.path_for(raw_kind)
    run.verify(raw, raw_kind, to_onnx.export_onnx(run.model, run.contract, raw, run.metadata, o.opset,
                                                  o.dynamic_batch))
    simplified = run.path_for(simplified_kind)
    details = simplify_onnx(raw, simplified, o.simplifier, run.metadata)
    log.debug("simplified with %s: %d -> %d nodes", o.simplifier, details["nodes_before"], details["nodes_after"])
    run.verify(simplified, simplified_kind, details)


def build_onnx_int8(run: ExportRun, fmt: ExportFormat) -> None:
    """ONNX Runtime's own static int8 (QDQ) of the verified simplified ONNX, calibrated on the set the
    integer TFLite files use (to_onnx_int8)."""
    (kind,) = fmt.artifacts
    if run.skip_untrained("onnx-int8", fmt.artifacts):
        return
    simplified = run.published("onnx-simplified", "fp32")
    if simplified is None:
        run.reject(kind, NOT_BUILT, "it is quantised from the simplified ONNX, which was not published")
        return
    choice = _calibration(run)
    path = run.path_for(kind)
    source = run.staging / simplified.file
    calibration = run.contract.prepare(choice.calibration.images.transpose(0, 3, 1, 2))
    details = to_onnx_int8.quantize_qdq(source, path, calibration)
    proto = onnx.load(str(path))
    details["mobile_rewrites"] = for_mobile_providers(proto)  # the quantiser may bring Constant nodes back
    to_onnx.set_metadata(proto, run.metadata)
    onnx.save(proto, str(path))
    run.verify(path, kind, {**details, "calibration_sha256": choice.calibration.sha256}, judged=choice.judged)


def build_ort(run: ExportRun, fmt: ExportFormat) -> None:
    """ORT Mobile files of the verified simplified ONNX and int8 ONNX (to_ort), each verified in ONNX Runtime as
    the app loads it, and the operator configuration of a reduced ORT build that runs them."""
    sources: dict[ArtifactKind, Artifact] = {}  # .ort kind -> the published ONNX it is converted from
    for kind, source_kind in zip(fmt.artifacts, (find_kind("onnx-simplified", "fp32"), find_kind("onnx", "int8-qdq"))):
        source = run.published(source_kind.format, source_kind.precision)
        if source is not None:
            sources[kind] = source
        elif (source_kind.format, source_kind.precision) in run.skipped_kinds or not run.settled(source_kind):
            # its source was not built on purpose, or not asked for
            run.skipped_kinds.add((kind.format, kind.precision))
            run.skipped[f"ort-{kind.precision}"] = f"no {source_kind.file_name(run.stem)} in this export to convert"
        else:
            run.reject(kind, NOT_BUILT, f"it is converted from {source_kind.file_name(run.stem)}, which was not "
                                        "published")
    if not sources:
        return
    config = run.staging / f"{run.stem}.required_operators.config"
    record = to_ort.convert({run.staging / s.file: run.path_for(k) for k, s in sources.items()}, config)
    # an .ort holds its .onnx's graph with ORT's basic optimisations, the graph ORT's checker checks
    published = [run.verify(run.path_for(kind), kind, {**record, "source": source.file},
                            ready={**source.readiness, "checked": f"{source.file}, the graph this file holds"})
                 for kind, source in sources.items()]
    if any(published):
        run.extras.append(config.name)


def prepare_calibration(run: ExportRun) -> None:
    """The calibration choice made before the ONNX int8 stage forks: the TFLite integer stage reuses it."""
    if not run.untrained:
        _calibration(run)


def _calibration(run: ExportRun) -> CalibrationChoice:
    """The int8 calibration choice of this export, made once for every integer format."""
    if run.calibration_choice is None:
        o = run.options
        run.calibration_choice = choose_calibration(run.loaded, run.inputs, o.calib_dir, o.seed)
        run.calibration = run.calibration_choice.to_manifest()
        c = run.calibration_choice
        log.info("int8 calibration: %s (sha256 %s); judged on %s", c.calibration.description,
                 c.calibration.sha256[:12], c.judged_description)
    return run.calibration_choice


def build_tflite(run: ExportRun, fmt: ExportFormat) -> None:
    """The model rewritten for XNNPACK (mobile_graph), exported to its own ONNX, converted by onnx2tf
    to a Keras model, then by the TF Lite converter at each precision."""
    o = run.options
    mobile_model, rewrites = for_xnnpack(run.model)
    work = run.staging / ".work" / "tflite"
    work.mkdir(parents=True)
    onnx_path = work / "mobile.onnx"
    to_onnx.export_onnx(mobile_model, run.contract, onnx_path, run.metadata, o.opset, False)
    simplify_onnx(onnx_path, onnx_path, o.simplifier, run.metadata, for_ort=False)
    photos = run.inputs.images[run.inputs.group_masks()["photos"]]
    keras_model = to_tflite.onnx_to_keras(onnx_path, work, photos)
    for kind in fmt.artifacts:
        path = run.path_for(kind)
        flatbuffer = to_tflite.embed_metadata(to_tflite.keras_to_tflite(keras_model, kind.precision), run.metadata)
        if kind.precision == "fp32":  # what the integer files are quantised from: the flatbuffer alone
            (work / QUANTIZER_SOURCE).write_bytes(flatbuffer)
        path.write_bytes(_with_metadata(run, flatbuffer))
        run.verify(path, kind, {"ops": to_tflite.check_builtin_only(path), "signature": SIGNATURE_KEY,
                                "graph_rewrites": rewrites})


def build_tflite_int8(run: ExportRun, fmt: ExportFormat) -> None:
    """int8-dynamic, int8-w8a8-mixed, int8-w8a8-pw from the verified fp32 .tflite (to_tflite_int8), and
    int8-w8a8-adaptive when int8-w8a8-mixed misses its budget (int8_adaptive)."""
    q = to_tflite_int8
    o = run.options
    if run.skip_untrained("tflite-int8", fmt.artifacts):
        return
    if run.published("tflite", "fp32") is None:
        for kind in fmt.artifacts:
            run.reject(kind, NOT_BUILT, "it is quantised from the fp32 .tflite, which was not published")
        return
    # the published file's flatbuffer without the packed labels file, which ai-edge-quantizer cannot read
    fp32 = run.staging / ".work" / "tflite" / QUANTIZER_SOURCE
    choice = _calibration(run)
    # One calibration pass serves every static recipe: the others keep more ops float, so they need a
    # subset of w8a8-mixed's ranges (byte-identical file to calibrating pw on its own, measured on XS).
    qsvs = q.calibrate(fp32, choice.calibration, q.W8A8_MIXED, o.threads)
    builds = {
        "int8-dynamic": (lambda: q.dynamic_range(fp32), q.describe_dynamic(), {}),
        **{recipe.name: (lambda r=recipe: q.quantize_with_ranges(fp32, r, qsvs), q.describe_static(recipe), {})
           for recipe in (q.W8A8_MIXED, q.W8A8_POINTWISE)},
    }
    for kind in fmt.artifacts:
        if kind.precision == q.ADAPTIVE:
            adapted = _adapt(run, kind, fp32, qsvs, choice.judged)
            if adapted is None:
                continue
            builds[kind.precision] = adapted
        build_bytes, recipe, extra = builds[kind.precision]
        path = run.path_for(kind)
        # the quantiser keeps our JSON buffer, not the standard metadata's labels file: written again
        path.write_bytes(_with_metadata(run, to_tflite.inline_buffers(build_bytes())))
        ops = to_tflite.check_builtin_only(path)
        partitions, delegated, total = delegated_nodes(path, o.threads)
        calibrated = kind.precision in CALIBRATED
        run.verify(path, kind,
                   {"ops": ops, "signature": SIGNATURE_KEY, "recipe": recipe,
                    "xnnpack": {"partitions": partitions, "delegated_nodes": delegated, "nodes": total},
                    "calibration_sha256": choice.calibration.sha256 if calibrated else None, **extra},
                   judged=choice.judged if calibrated else None)


def _adapt(run: ExportRun, kind: ArtifactKind, fp32: Path, qsvs: dict, judged: np.ndarray):
    """The adaptive build (a builds entry) when int8-w8a8-mixed was rejected over its budget; otherwise
    None, the kind skipped (not needed) or rejected (no recipe within the limits)."""
    mixed = next((r for r in run.rejected if (r.format, r.precision) == ("tflite", to_tflite_int8.W8A8_MIXED.name)),
                 None)
    if mixed is None or mixed.reason != OVER_BUDGET:
        run.skipped_kinds.add((kind.format, kind.precision))
        log.info("%s: not built (%s)", kind.precision, "int8-w8a8-mixed fits its budget" if mixed is None
                 else f"int8-w8a8-mixed was rejected for a {mixed.reason}, which float layers do not fix")
        return None
    work = fp32.parent
    model_bytes = fp32.read_bytes()
    files = run.artifact_inputs
    layers = int8_adaptive.layers_of(model_bytes, run.references.model, files[:1], normalise(run.inputs.images[:1]))
    candidate = work / "adaptive-candidate.tflite"

    def evaluate(flatbuffer: bytes) -> float:
        candidate.write_bytes(flatbuffer)
        joints = open_session(kind.runtime, candidate, run.options.threads, kind.layout).run_all(files[judged])
        return parity_stats(joints, run.references.fp32[judged], run.loaded.spec).p99_input_px

    adaptation = int8_adaptive.adapt(model_bytes, layers, qsvs, evaluate, run.budgets.int8)
    record = {"adaptive": adaptation.to_dict()}
    if adaptation.model is None:
        run.reject(kind, OVER_BUDGET, f"no adaptive recipe within the limits: {adaptation.limit}", details=record)
        return None
    recipe = replace(to_tflite_int8.W8A8_MIXED, name=kind.precision)
    built = adaptation.model
    return (lambda: built), to_tflite_int8.describe_static(recipe, adaptation.float_layers), record


def _with_metadata(run: ExportRun, tflite: bytes) -> bytes:
    """The standard TFLite metadata (and the joint-names labels file) written into a .tflite."""
    return tflite_metadata.write(tflite, app_metadata(run.loaded, run.contract))


def build_coreml(run: ExportRun, fmt: ExportFormat) -> None:
    """Each kind's Core ML target converted from the traced model and verified."""
    quiet.import_quietly("coremltools")
    targets = {(t.format, t.precision): t for t in TARGETS}
    traced = to_coreml.trace(run.model, run.contract)  # one trace for every target (0.8 s each for S)
    for kind in fmt.artifacts:
        target = targets[(kind.format, kind.precision)]
        # compressed packages are for trained weights only (docs/integer-files.md)
        if target.compression and run.skip_untrained(f"coreml {kind.precision}", (kind,)):
            continue
        path = run.path_for(kind)
        input_kind = run.options.coreml_input_kind
        details = to_coreml.export_coreml(run.model, run.contract, path, target, run.metadata, input_kind, traced)
        run.verify(path, kind, details, layout="image" if input_kind == "image" else None)


def build_executorch(run: ExportRun, fmt: ExportFormat) -> None:
    """ExecuTorch programs from the model itself (to_executorch): for the XNNPACK delegate fp32, then int8
    (PT2E) calibrated on the set the other integer files use; then for the Core ML delegate. An operator
    left outside a delegate is named here and recorded in the manifest."""
    import torch

    fp32_kind, int8_kind, coreml_kind = fmt.artifacts
    example = torch.from_numpy(run.artifact_inputs[:1].astype(np.float32))
    # XNNPACK has no fast 7x7 depthwise kernel, whoever calls it: the same exact split as the TFLite graph
    # (S, 2 threads: fp32 34.8 -> 20.9 ms, int8 42.2 -> 10.4 ms per image in ExecuTorch's runtime)
    model, rewrites = for_executorch(run.model)
    path = run.path_for(fp32_kind)
    details = {**to_executorch.export_fp32(model, example, path), "graph_rewrites": rewrites}
    _name_undelegated(path.name, details["delegation"])
    run.verify(path, fp32_kind, details)
    if not run.skip_untrained("executorch-int8", (int8_kind,)):
        choice = _calibration(run)
        path = run.path_for(int8_kind)
        calibration = run.contract.prepare(choice.calibration.images.transpose(0, 3, 1, 2))
        details = {**to_executorch.export_int8(model, calibration, path), "graph_rewrites": rewrites}
        _name_undelegated(path.name, details["delegation"])
        run.verify(path, int8_kind, {**details, "calibration_sha256": choice.calibration.sha256},
                   judged=choice.judged)
    # Core ML has fast 7x7 depthwise kernels: the model as the Core ML stage converts it, not the split one
    quiet.import_quietly("coremltools")
    path = run.path_for(coreml_kind)
    details = to_executorch.export_coreml(run.model, example, path, EXECUTORCH_COREML.compute_precision,
                                          EXECUTORCH_COREML.min_target)
    _name_undelegated(path.name, details["delegation"])
    run.verify(path, coreml_kind, details)


def _name_undelegated(file: str, record: dict) -> None:
    if record["non_delegated_ops"]:
        log.warning("%s: %s outside the %s delegate (portable kernels, slow): %s", file,
                    sum(record["non_delegated_ops"].values()), record["delegate"],
                    ", ".join(f"{op} x{n}" for op, n in record["non_delegated_ops"].items()))
