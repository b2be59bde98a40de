"""The parity suite: re-run every artifact of an export in its own runtime and judge it with the one
tolerance table. Numbers come from running the files, never from the manifest's word."""

from __future__ import annotations

from pathlib import Path

from exporters.calibration import judged_mask_for
from exporters.formats import find_kind
from exporters.inputs import inputs_for
from exporters.manifest import Manifest
from exporters.parity import check, reference_joints
from models.preprocessing import normalise
from runtimes import open_session


def tolerance_key(fmt: str, precision: str) -> tuple[str, str]:
    """The tolerance row of an exported artifact: its kind's, or (format, precision) for a kind the table lacks."""
    kind = find_kind(fmt, precision)
    return kind.tolerance_key if kind else (fmt, precision)


def check_artifacts(out_dir: Path, images_dir: Path | None = None, seed: int = 0, threads: int = 2) -> list[dict]:
    """One gate report (ParityReport.to_dict() + file, runtime) per artifact of the export in ``out_dir``."""
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    loaded = manifest.load_checkpoint()
    inputs = inputs_for(loaded, images_dir, seed)
    reference = reference_joints(loaded, inputs.images)
    fed = inputs.images if manifest.normalization_folded else normalise(inputs.images)
    checks = []
    for art in manifest.artifacts:
        session = open_session(art.runtime, out_dir / art.file, threads, art.layout)
        report = check(session.run_all(fed), reference, loaded.spec, *tolerance_key(art.format, art.precision),
                       judged_mask_for(manifest, inputs, art.precision))
        by = {} if session.timed else {"evaluated_by": session.runtime}
        checks.append({"file": art.file, "runtime": session.runtime, **report.to_dict(), **by})
    return checks
