"""The parity suite: re-run every artifact of an export in its own runtime, on the verification set
the export recorded, and judge it again with the same gates (judging/gates.py). Numbers come
from running the files, never from the manifest's word."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.errors import ManifestError
from judging import golden
from judging.cross_isa import CpuCheck, judged_golden_rows, verify_on_arm64
from judging.gates import Budgets, Verdict, judge, settle_borderline
from judging.inputs import InputSet, gpu_rows, more_judged_images, recorded_inputs
from judging.judged_rows import judged_mask_for
from judging.manifest import Artifact, Manifest
from judging.on_gpu import gpu_candidates, verify_on_gpu, with_gpu_checks
from judging.references import References
from models.preprocessing import normalise
from runtimes import open_session


def budgets_of(manifest: Manifest) -> Budgets:
    return Budgets(**manifest.gates["budgets_input_px"])


def judge_artifact(manifest: Manifest, art: Artifact, joints, refs: References, inputs: InputSet,
                   as_exported: bool = False) -> Verdict:
    """The verdict on an exported artifact's joints, with the arithmetic, budgets and borderline rule its
    export used. ``as_exported``: on the judged images its export judged it on (the first ones of its
    judged rows, as many as its verdict counts), not every judged row of ``inputs`` (the bench judges on more)."""
    judged = judged_mask_for(manifest, inputs, art.precision)
    if as_exported:
        judged &= np.cumsum(judged) <= art.verdict["cost"]["n_inputs"]
    verdict = judge(joints, art.verdict["arithmetic"], refs, judged, budgets_of(manifest), inputs.units())
    return settle_borderline(verdict, manifest.gates.get("reject_borderline", False)) if as_exported else verdict


def as_exported_set(manifest: Manifest, art: Artifact, inputs: InputSet, refs: References,
                    extended: dict[tuple[str, ...], References]) -> tuple[InputSet, References]:
    """The verification set with the images a borderline cost of ``art`` was judged on beyond it (the same
    ones its export drew: judging/inputs.more_judged_images), and the references on it; ``extended``
    caches references by the extra images' sources."""
    judged = judged_mask_for(manifest, inputs, art.precision)
    extra = art.verdict["cost"]["n_inputs"] - int(judged.sum())
    if extra <= 0:
        return inputs, refs
    more = more_judged_images(refs.spec, inputs, extra, manifest.verification["seed"], judged)
    if more.sources not in extended:
        extended[more.sources] = refs.extended(more.images)
    return inputs.with_more(more), extended[more.sources]


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
    extended: dict[tuple[str, ...], References] = {}
    checks = []
    for art in manifest.artifacts:
        session = open_session(art.runtime, out_dir / art.file, threads, art.layout)
        on, on_refs = as_exported_set(manifest, art, inputs, refs, extended)
        fed = on.images if manifest.normalization_folded else normalise(on.images)
        verdict = judge_artifact(manifest, art, session.run_all(fed), on_refs, on, as_exported=True)
        by = {} if session.timed else {"evaluated_by": session.runtime}
        checks.append({"file": art.file, "runtime": session.runtime, **verdict.to_dict(), **by})
    return checks


def with_arm64_checks(art: Artifact, checks: list[CpuCheck] | None) -> Artifact:
    """``art`` with its emulated-CPU records replaced by ``checks`` (this machine's record kept)."""
    if not checks:
        return art
    kept = [r for r in art.verified_on if not r.get("emulated")]
    return replace(art, verified_on=(*kept, *(c.record() for c in checks)))


def golden_rows(out_dir: Path, inputs: InputSet) -> tuple[list[int], np.ndarray, dict[str, np.ndarray]]:
    """Where the golden inputs sit in the verification set, the tensors apps feed (NCHW, as written), and
    each artifact's golden joints (this machine's)."""
    path = Path(out_dir) / golden.GOLDEN_DIR / golden.GOLDEN_JSON
    if not path.is_file():
        raise ManifestError(f"{path} not found: the arm64 verification runs on the golden inputs; re-export")
    record = json.loads(path.read_text())
    rows, tensors = [], []
    for entry in record["inputs"]:
        if entry["source"] not in inputs.sources:
            raise ManifestError(f"golden input {entry['id']} ({entry['source']}) is not in the verification set "
                                "(different --images?)")
        rows.append(inputs.sources.index(entry["source"]))
        shape = entry["nchw"]["shape"]
        tensors.append(np.fromfile(path.parent / entry["nchw"]["file"], dtype="<f4").reshape(shape[1:]))
    ids = [entry["id"] for entry in record["inputs"]]
    here = {file: np.asarray([a["joints"][i] for i in ids], dtype=np.float64)
            for file, a in record["artifacts"].items()}
    return rows, np.stack(tensors).astype(np.float32), here


def _untampered_export(out_dir: Path, images_dir: Path | None):
    """The export's manifest (every file its verified bytes, else ManifestError), checkpoint and verification set."""
    manifest = Manifest.read(out_dir)
    manifest.refuse_tampered(out_dir)
    loaded = manifest.load_checkpoint()
    return manifest, loaded, recorded_inputs(loaded, manifest.verification, images_dir)


def check_on_arm64(out_dir: Path, images_dir: Path | None = None, **run_options) -> tuple[Manifest, dict]:
    """Judge every .tflite, .onnx and .ort of the export in ``out_dir`` on each emulated arm64 CPU model, on the
    golden inputs, with the gates of its export; record the verdicts in the manifest (``verified_on``) and
    the measured cross-ISA differences as golden.json's CPU tolerances. Returns the updated manifest and
    the checks (file -> one CpuCheck per CPU model)."""
    from runtimes.arm64.target import ensure_ready

    ensure_ready()  # before minutes of work: one line naming `make arm64` if it is not there
    out_dir = Path(out_dir)
    manifest, loaded, inputs = _untampered_export(out_dir, images_dir)
    rows, fed, here = golden_rows(out_dir, inputs)
    refs = References.of(loaded, inputs.images).subset(np.asarray(rows))
    checks = verify_on_arm64(out_dir, manifest.artifacts, fed, refs, judged_golden_rows(manifest, inputs, rows), here,
                             budgets_of(manifest), **run_options)
    updated = manifest.with_artifacts([with_arm64_checks(a, checks.get(a.file)) for a in manifest.artifacts])
    updated.write(out_dir)
    golden.update_tolerances(out_dir, updated)
    return updated, checks


def check_on_gpu(out_dir: Path, images_dir: Path | None = None, **run_options) -> tuple[Manifest, dict]:
    """Judge every .tflite of the export in ``out_dir`` on LiteRT's GPU accelerator with its default (fp16)
    options, on the judged and golden inputs, with the budgets of its export; record the verdicts in the manifest
    (``verified_on``) and the measured distances as golden.json's delegate tolerances. Returns the updated
    manifest and the checks (file -> GpuCheck)."""
    from runtimes.gpu.target import ensure_ready

    ensure_ready()  # one line naming `make gpu` if it is not there
    out_dir = Path(out_dir)
    manifest, loaded, inputs = _untampered_export(out_dir, images_dir)
    golden_at, _, _ = golden_rows(out_dir, inputs)
    rows = gpu_rows(inputs, golden_at)
    fed = inputs.images[rows] if manifest.normalization_folded else normalise(inputs.images[rows])
    refs = References.of(loaded, inputs.images).subset(rows)
    on_this_cpu = {a.file: open_session(a.runtime, out_dir / a.file, 2, a.layout).run_all(fed)
                   for a in gpu_candidates(manifest.artifacts)}
    checks = verify_on_gpu(out_dir, manifest.artifacts, fed, refs, judged_golden_rows(manifest, inputs, list(rows)),
                           on_this_cpu, budgets_of(manifest), inputs.units()[rows], **run_options)
    updated = manifest.with_artifacts([with_gpu_checks(a, checks.get(a.file)) for a in manifest.artifacts])
    updated.write(out_dir)
    golden.update_tolerances(out_dir, updated)
    return updated, checks
