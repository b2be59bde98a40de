"""The state one export shares between its stages, and how a stage verifies what it built.

A stage (exporters/pipeline/stages.py) writes its files into ``run.staging`` and hands each to
:meth:`ExportRun.verify`, which runs it in the runtime its artifact kind names, judges it
(judging/gates.py), and records it for publishing -- or as rejected, with the figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.files import path_digest
from exporters.converters.calibration import CalibrationChoice
from exporters.formats import ArtifactKind
from judging.cross_isa import host_record
from judging.gates import BORDERLINE, CONVERSION_ERROR, OVER_BUDGET, Budgets, Verdict, judge, settle_borderline
from judging.inputs import InputSet, more_judged_images, most_judged_rows
from judging.manifest import Artifact, Rejection
from judging.more_images import MAX_JUDGED_IMAGES, judge_until_decided
from judging.readiness import lost, readiness
from judging.references import References
from models.checkpoint import LoadedCheckpoint
from models.contract import InputContract
from models.network import ConvNeXtPose
from runtimes import open_session
from runtimes.arm64.runner import DEFAULT_TIMEOUT_S
from runtimes.coreml import FP16_ACCUMULATION, fp16_accumulation_check

log = logging.getLogger(__name__)

#: An fp16 Core ML program over its budget when every sum is accumulated in fp16 (ExportRun._fp16_accumulation).
UNDER_FP16_ACCUMULATION = "under fp16 accumulation (every sum in fp16, one term at a time)"


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    variant: str | None = None
    checkpoint: Path | None = None
    joints: int = 18
    num_upsample: int | None = None
    formats: tuple[str, ...] | None = None  # None: the format table's defaults
    fold_normalization: bool = True
    opset: int = 17
    dynamic_batch: bool = False
    simplifier: str = "onnxsim"
    images_dir: Path | None = None
    calib_dir: Path | None = None  # int8 calibration photos (default: see calibration.choose_calibration)
    seed: int = 0
    threads: int = 2
    # without a checkpoint: untrained synthetic weights instead of the trained reference
    untrained_default: bool = False
    max_error_px: float | None = None  # cost budget of every reduced precision, input px (None: gates defaults)
    coreml_input: str | None = None  # "image" | "tensor"; None: image when the normalisation is folded
    strict: bool = False  # any rejected artifact fails the whole export (exit 2, OUT untouched)
    verify_arch: str | None = None  # "arm64": also judge every .tflite/.onnx/.ort on the emulated arm64 cores
    verify_arch_timeout_s: float = DEFAULT_TIMEOUT_S  # seconds one file may take on one emulated core (or the GPU)
    verify_gpu: bool = False  # also judge every .tflite on LiteRT's GPU accelerator (fp16; `make gpu` sets it up)
    #: a cost still borderline after the most images: rejected instead of decided by its p99 (judging/gates.py)
    reject_borderline: bool = False


    @property
    def coreml_input_kind(self) -> str:
        return self.coreml_input or ("image" if self.fold_normalization else "tensor")


@dataclass
class ExportRun:
    """State shared by the stages of one export."""

    options: ExportOptions
    loaded: LoadedCheckpoint
    contract: InputContract
    model: ConvNeXtPose  # what the artifacts contain (normalisation folded or not)
    inputs: InputSet
    references: References  # PyTorch references of every arithmetic on ``inputs``
    budgets: Budgets
    staging: Path
    metadata: dict[str, str]
    stem: str
    artifacts: list[Artifact] = field(default_factory=list)  # published
    rejected: list[Rejection] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why it produced nothing
    skipped_kinds: set[tuple[str, str]] = field(default_factory=set)  # (format, precision) not built on purpose
    calibration: dict | None = None  # manifest record of the int8 calibration set
    calibration_choice: CalibrationChoice | None = None  # made once for every integer format
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # published file -> its joints on ``inputs``
    extras: list[str] = field(default_factory=list)  # files a stage wrote beside its artifacts (an .ort's op list)
    #: extra judged images drawn for borderline costs (their sources) -> references on the extended set
    extensions: dict[tuple[str, ...], References] = field(default_factory=dict)

    @property
    def artifact_inputs(self) -> np.ndarray:
        return self.contract.prepare(self.inputs.images)

    def path_for(self, kind: ArtifactKind) -> Path:
        return self.staging / kind.file_name(self.stem)

    def verify(self, path: Path, kind: ArtifactKind, details: dict[str, Any] | None = None,
               judged: np.ndarray | None = None, layout: str | None = None,
               ready: dict[str, Any] | None = None) -> Artifact | None:
        """Run ``path`` in its kind's runtime and judge it (judging/gates.py): the artifact when it is
        published, None when it is rejected (the rejection recorded). ``layout``: the input this file
        takes when it is not its kind's (a Core ML image input: "image"). ``ready``: its accelerator
        readiness when it is known already (an .ort holds its .onnx's graph), else it is checked here."""
        layout = layout or kind.layout
        session = open_session(kind.runtime, path, self.options.threads, layout)
        joints = session.run_all(self.artifact_inputs)
        judged = self.inputs.judged_mask() if judged is None else judged
        verdict = judge(joints, kind.arithmetic, self.references, judged, self.budgets, self.inputs.units())
        if verdict.kind == BORDERLINE:
            # weights marked untrained: a cost measures random heatmaps (docs/integer-files.md), no images are
            # spent refining it (the untrained XS .mlpackage: 66 s of the reference evaluator on 150 more crops)
            if not self.untrained:
                verdict = self._judge_on_more_images(path.name, session, joints, judged, kind.arithmetic, verdict)
            verdict = settle_borderline(verdict, self.options.reject_borderline)
        record = verdict.to_dict() | ({} if session.timed else {"evaluated_by": session.runtime})
        if not verdict.published:  # its file stays in staging (a later stage may build on it) and is not published
            self.reject(kind, verdict.reason, verdict.describe(), record)
            return None
        # weights marked untrained: random, flat heatmaps, which no fp16 sum keeps (their costs measure the weights)
        accumulated = self._fp16_accumulation(path, kind, judged) if kind.runtime == "coreml" and not self.untrained \
            else None
        if accumulated is not None and not accumulated.published:
            # non-finite joints there are a sum that overflowed fp16 (flat, untrained-like heatmaps): the precision's
            # cost, not the conversion's (the file computes correctly in fp32 and in fp16 tensors)
            reason = accumulated.reason if accumulated.reason != f"{CONVERSION_ERROR}: non-finite outputs" else \
                OVER_BUDGET
            self.reject(kind, reason, f"{UNDER_FP16_ACCUMULATION}: {accumulated.describe() or 'non-finite joints'}",
                        record | {"fp16_accumulation": accumulated.to_dict()})
            return None
        size, sha = path_digest(path)
        n, c, h, w = self.contract.shape_nchw
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        try:
            ready = ready if ready is not None else readiness(kind.runtime, kind.arithmetic, path, details)
        except Exception as exc:  # a checker that fails says nothing about the file, which is verified: it ships
            ready = {"unchecked": f"{type(exc).__name__}: {exc}"[:300]}
            log.warning("%s: accelerator readiness not checked: %s", path.name, ready["unchecked"])
        missing = lost(ready) if kind.for_phones else []
        if missing:
            log.warning("%s: does not run whole on the phone's accelerators -- %s", path.name, "; ".join(missing))
        checked = (host_record(session.runtime, len(joints)),)
        if accumulated is not None:
            checked += ({"accumulation": "fp16", "runtime": FP16_ACCUMULATION, "status": "passed",
                         "inputs": accumulated.cost.n_inputs, "headline": accumulated.headline(),
                         "verdict": accumulated.to_dict()},)
        artifact = Artifact(path.name, kind.format, kind.precision, layout, shape, size, sha, kind.runtime,
                            record, details or {}, checked, ready)
        self.artifacts.append(artifact)
        self.outputs[artifact.file] = joints
        log.info("%s: published (%s)", path.name, verdict.headline())
        return artifact

    def _fp16_accumulation(self, path: Path, kind: ArtifactKind, judged: np.ndarray) -> Verdict | None:
        """An fp16 Core ML program judged again with every sum accumulated in fp16, one term at a time (the worst
        a phone's GPU or Neural Engine can do: runtimes/coreml_reference/fp16_accumulation.py), on the judged
        images, against its own budget; decided by its p99 there (no more images: ~1 s an image). None for a
        file that does not compute in fp16."""
        rows = np.flatnonzero(judged)
        joints = fp16_accumulation_check(path, self.artifact_inputs[rows])
        if joints is None:
            return None
        verdict = judge(joints, kind.arithmetic, self.references.subset(rows), np.ones(len(rows), bool),
                        self.budgets, self.inputs.units()[rows])
        log.info("%s under fp16 accumulation: %s", path.name, verdict.headline())
        return verdict

    def _judge_on_more_images(self, name: str, session, joints: np.ndarray, judged: np.ndarray, arithmetic: str,
                              verdict: Verdict) -> Verdict:
        """A cost whose interval straddles the budget, judged again on more images of the judged kind (the
        synthetic task's evaluation split for weights trained on it, else jittered detector boxes around the
        judged photo crops) until it decides (judging/more_images.py); the images depend on their index only,
        so `verify` rebuilds the same ones."""
        return judge_until_decided(verdict, joints, judged, self.inputs.units(), arithmetic, self.budgets,
                                   lambda extra: self._more_images(extra, judged),
                                   lambda images: session.run_all(self.contract.prepare(images)), name,
                                   most_judged_rows(self.inputs, judged, MAX_JUDGED_IMAGES))

    def _more_images(self, extra: int, judged: np.ndarray) -> tuple[InputSet, References]:
        """``extra`` more images of the kind the ``judged`` rows are (judging/inputs.more_judged_images), and the
        references on the verification set extended by them (cached: files judged alike share them)."""
        more = more_judged_images(self.loaded.spec, self.inputs, extra, self.options.seed, judged)
        if more.sources not in self.extensions:
            # a longer draw starts with a shorter one: PyTorch runs on the images no earlier draw had
            known = max((k for k in self.extensions if more.sources[:len(k)] == k), key=len, default=())
            base = self.extensions[known] if known else self.references
            self.extensions[more.sources] = base.extended(more.images[len(known):])
        return more, self.extensions[more.sources]

    def reject(self, kind: ArtifactKind, reason: str, detail: str, verdict: dict | None = None,
               details: dict | None = None) -> None:
        self.rejected.append(Rejection(kind.file_name(self.stem), kind.format, kind.precision, reason, detail,
                                       verdict, details))
        log.warning("%s: rejected -- %s: %s", kind.file_name(self.stem), reason, detail)

    def published(self, fmt: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if (a.format, a.precision) == (fmt, precision)), None)

    def settled(self, kind: ArtifactKind) -> bool:
        """Published, rejected or skipped already (a crashed stage rejects only what it had not settled)."""
        key = (kind.format, kind.precision)
        done = [*self.artifacts, *self.rejected]
        return key in self.skipped_kinds or any((r.format, r.precision) == key for r in done)

    @property
    def untrained(self) -> bool:
        """Weights marked as untrained (synthetic, not the trained-synthetic reference)."""
        return bool(self.loaded.synthetic) and not self.loaded.trained_synthetic

    def skip_untrained(self, what: str, kinds: tuple[ArtifactKind, ...]) -> bool:
        """Integer artifacts are built for trained weights only: on weights marked as untrained, whose
        heatmaps are multi-modal noise, their error figure would measure the random weights."""
        if not self.untrained:
            return False
        self.skipped_kinds |= {(k.format, k.precision) for k in kinds}
        marker = self.loaded.synthetic.get("kind")
        self.skipped[what] = (f"the checkpoint is marked '{marker}' (not trained): multi-modal heatmaps make any "
                              "int8 error figure meaningless (docs/integer-files.md); export a trained "
                              "checkpoint or the trained-synthetic reference")
        log.warning("%s skipped: %s", what, self.skipped[what])
        return True

