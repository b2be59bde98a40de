"""Which rows of the verification set an artifact is judged on: calibrated integer artifacts on the
inputs disjoint from their calibration set (by picture content), every other artifact on the set's
judged group. One definition for the export, verify and the bench."""

from __future__ import annotations

import numpy as np

from common.errors import ExportError
from judging.inputs import InputSet
from judging.manifest import Manifest

#: Precisions whose activation ranges come from the calibration set: judged only on inputs disjoint from it.
CALIBRATED: frozenset[str] = frozenset({"int8-w8a8-mixed", "int8-w8a8-pw", "int8-w8a8-adaptive", "int8-qdq",
                                         "int8-pt2e"})


def disjoint_photos(inputs: InputSet, calibration_digests: set[str]) -> np.ndarray:
    """Photo rows of ``inputs`` whose picture (by content, whatever its file name) did not calibrate."""
    return np.array([d is not None and d not in calibration_digests for d in inputs.photo_row_digests()], dtype=bool)


def int8_judged_mask(manifest: Manifest, inputs: InputSet) -> np.ndarray:
    """Rows of ``inputs`` an export's integer artifacts are judged on (its manifest says which)."""
    record = manifest.calibration or {}
    if not record.get("int8_judged_sources"):
        raise ExportError("manifest has no int8 calibration record: re-export with tflite-int8")
    if record.get("int8_judged_group"):
        mask = inputs.group_masks().get(record["int8_judged_group"], np.zeros(len(inputs), dtype=bool))
    else:
        mask = disjoint_photos(inputs, set(record["file_content_sha256"]))
    if not mask.any():
        raise ExportError("none of the inputs the int8 artifacts were judged on is in this verification set "
                          "(different --images?)")
    return mask


def judged_mask_for(manifest: Manifest, inputs: InputSet, precision: str) -> np.ndarray:
    """Rows of ``inputs`` an exported artifact of ``precision`` is judged on: calibrated integer
    artifacts on the inputs disjoint from their calibration set, the others on ``judged_group``."""
    return int8_judged_mask(manifest, inputs) if precision in CALIBRATED else inputs.judged_mask()
