"""The parity suite: re-run every artifact of an export in its own runtime, on the verification set
the export recorded, and judge it again with the same gates (judging/gates.py). Numbers come
from running the files, never from the manifest's word."""

from __future__ import annotations

from pathlib import Path

from judging.gates import Budgets, Verdict, judge
from judging.inputs import InputSet, recorded_inputs
from judging.judged_rows import judged_mask_for
from judging.manifest import Artifact, Manifest
from judging.references import References
from models.preprocessing import normalise
from runtimes import open_session


def budgets_of(manifest: Manifest) -> Budgets:
    return Budgets(**manifest.gates["budgets_input_px"])


def judge_artifact(manifest: Manifest, art: Artifact, joints, refs: References, inputs: InputSet) -> Verdict:
    """The verdict on an exported artifact's joints, with the arithmetic and budgets its export used."""
    return judge(joints, art.verdict["arithmetic"], refs, judged_mask_for(manifest, inputs, art.precision),
                 budgets_of(manifest))


def check_artifacts(out_dir: Path, images_dir: Path | None = None, threads: int = 2, rehash: bool = True) -> list[dict]:
    """One verdict (Verdict.to_dict() + file, runtime) per artifact of the export in ``out_dir``.

    ``rehash``: first refuse any artifact whose bytes are not the verified ones (ManifestError);
    off, a changed file is judged on what it computes."""
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    if rehash:
        manifest.refuse_tampered(out_dir)
    loaded = manifest.load_checkpoint()
    inputs = recorded_inputs(loaded, manifest.verification, images_dir)
    refs = References.of(loaded, inputs.images)
    fed = inputs.images if manifest.normalization_folded else normalise(inputs.images)
    checks = []
    for art in manifest.artifacts:
        session = open_session(art.runtime, out_dir / art.file, threads, art.layout)
        verdict = judge_artifact(manifest, art, session.run_all(fed), refs, inputs)
        by = {} if session.timed else {"evaluated_by": session.runtime}
        checks.append({"file": art.file, "runtime": session.runtime, **verdict.to_dict(), **by})
    return checks
