"""The state one export shares between its stages, and how a stage verifies what it built.

A stage (an :class:`exporters.formats.ExportFormat`'s ``build``) writes its files into
``run.staging`` and hands each to :meth:`ExportRun.verify`, which runs it in the runtime its
artifact kind names, judges it against the PyTorch reference, and records it for publishing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ExportError
from common.files import path_digest
from exporters.contract import InputContract
from exporters.inputs import InputSet
from exporters.kinds import ArtifactKind
from exporters.manifest import Artifact
from exporters.parity import check
from models.checkpoint import LoadedCheckpoint
from models.network import ConvNeXtPose
from runtimes import open_session

log = logging.getLogger(__name__)


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


@dataclass
class ExportRun:
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

    def path_for(self, kind: ArtifactKind) -> Path:
        return self.staging / kind.file_name(self.stem)

    def verify(self, path: Path, kind: ArtifactKind, details: dict[str, Any] | None = None,
               judged: np.ndarray | None = None) -> Artifact:
        """Run ``path`` in its kind's runtime, gate it, and record it for publishing (ExportError if it fails)."""
        session = open_session(kind.runtime, path, self.options.threads, kind.layout)
        joints = session.run_all(self.artifact_inputs)
        judged = self.inputs.judged_mask() if judged is None else judged
        report = check(joints, self.reference, self.loaded.spec, *kind.tolerance_key, judged)
        evaluated_by = session.runtime if not session.timed else None
        parity = report.to_dict() | ({"evaluated_by": evaluated_by} if evaluated_by else {})
        if not report.passed:
            raise ExportError(f"parity check failed for {path.name} ({kind.format} {kind.precision}"
                              f"{', ' + evaluated_by if evaluated_by else ''}): {report.describe()}")
        size, sha = path_digest(path)
        n, c, h, w = self.contract.shape_nchw
        shape = (n, h, w, c) if kind.layout == "NHWC" else (n, c, h, w)
        artifact = Artifact(path.name, kind.format, kind.precision, kind.layout, shape, size, sha, kind.runtime,
                            parity, details or {})
        self.artifacts.append(artifact)
        return artifact

    def skip_untrained(self, what: str) -> bool:
        """Integer artifacts are built for trained weights only: on untrained ones, whose heatmaps are
        multi-modal noise, their error figure would measure the random weights, not the conversion."""
        if not self.loaded.synthetic or self.loaded.trained_synthetic:
            return False
        kind = self.loaded.synthetic.get("kind")
        self.skipped[what] = (f"untrained {kind} weights: their multi-modal heatmaps make any int8 error figure "
                              "meaningless (README 'Integer artifacts'); export a trained checkpoint or the "
                              "trained-synthetic reference")
        log.warning("%s skipped: %s", what, self.skipped[what])
        return True
