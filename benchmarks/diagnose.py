"""`convnextpose diagnose OUT`: where each artifact departs from PyTorch, boundary by boundary.

Every artifact of an export (or one file) runs on the export's verification inputs with every
intermediate tensor kept (ONNX Runtime: all tensors as outputs; TFLite: builtin kernels with
tensors preserved, integer tensors dequantised; Core ML: the reference evaluator, op by op). Each
architecture boundary is matched to the artifact's tensor and scored in dB (judging/divergence.py).
Output: a table, ``diagnose.json`` and ``diagnose.png`` (SNR vs depth, one line per artifact).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import ConvNeXtPoseError
from common.files import write_atomic, write_json_atomic
from common.tables import format_table
from exporters.formats import FORMATS, ArtifactKind
from judging.boundaries import Boundary, boundaries, torch_boundaries
from judging.divergence import CEILING_DB, JUMP_DB, Divergence, match
from judging.inputs import recorded_inputs
from judging.manifest import Manifest
from models.preprocessing import normalise
from runtimes import INTERMEDIATES

log = logging.getLogger(__name__)

DIAGNOSE_JSON, DIAGNOSE_PNG = "diagnose.json", "diagnose.png"
#: Inputs diagnosed by default: the first of the judged verification inputs. On S, boundary SNRs of
#: 4 and of all 10 judged images differ by <= 2.9 dB, with the same first jumps (docs/diagnose.md).
DEFAULT_IMAGES = 4


@dataclass(frozen=True)
class Target:
    """One file to diagnose."""

    file: str  # as shown
    path: Path
    runtime: str
    layout: str


@dataclass
class Diagnosis:
    variant: str
    images: int
    found: list[Boundary]
    results: list[Divergence] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # file -> why it could not be diagnosed
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"variant": self.variant, "images": self.images,
                "metric": "SNR dB = 10 log10(sum ref^2 / sum (artifact - ref)^2) at each boundary, over the images",
                "ceiling_db": CEILING_DB, "jump_db": JUMP_DB,
                "boundaries": [b.name for b in self.found],
                "artifacts": [r.to_dict() for r in self.results],
                "failures": self.failures, "warnings": self.warnings}


def kind_for_file(name: str) -> ArtifactKind:
    """The format-table kind whose suffix ends ``name`` (the longest: .sim.onnx before .onnx)."""
    kinds = [k for f in FORMATS for k in f.artifacts if name.endswith(k.suffix)]
    if not kinds:
        suffixes = sorted({k.suffix for f in FORMATS for k in f.artifacts})
        raise ConvNeXtPoseError(f"{name}: not an artifact file name this project writes (ends with one of "
                                f"{', '.join(suffixes)})")
    return max(kinds, key=lambda k: len(k.suffix))


def targets(manifest: Manifest, out_dir: Path, artifact: Path | None) -> list[Target]:
    """Every published artifact, or ``artifact``: a file of the export by name, or any file of a kind
    this project writes (a rejected file kept aside, a file rebuilt elsewhere)."""
    listed = {a.file: a for a in manifest.artifacts}
    if artifact is None:
        return [Target(a.file, out_dir / a.file, a.runtime, a.layout) for a in manifest.artifacts]
    if str(artifact) in listed:
        a = listed[str(artifact)]
        return [Target(a.file, out_dir / a.file, a.runtime, a.layout)]
    if not artifact.exists():
        raise ConvNeXtPoseError(f"{artifact}: no such file, and not an artifact of {out_dir} "
                                f"({', '.join(listed) or 'none published'})")
    kind = kind_for_file(artifact.name)
    return [Target(str(artifact), artifact, kind.runtime, kind.layout)]


def diagnose(out_dir: Path, artifact: Path | None = None, images_dir: Path | None = None,
             images: int = DEFAULT_IMAGES, threads: int = 2) -> Diagnosis:
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    chosen = targets(manifest, out_dir, artifact)
    loaded = manifest.load_checkpoint()
    inputs = recorded_inputs(loaded, manifest.verification, images_dir)
    rgb = inputs.images[inputs.judged_mask()][:images]
    model = loaded.build_model()
    found = boundaries(model)
    result = Diagnosis(loaded.spec.name, len(rgb), found)
    tampered = manifest.tampered(out_dir, {t.file for t in chosen})
    result.warnings += [f"{file}: {problem}; diagnosing what it computes now" for file, problem in tampered.items()]
    for w in result.warnings:
        log.warning("%s", w)
    references = [torch_boundaries(model, torch.from_numpy(normalise(x[None]))) for x in rgb]
    fed = rgb if manifest.normalization_folded else normalise(rgb)
    for target in chosen:
        log.info("diagnosing %s (%s) on %d input(s)", target.file, target.runtime, len(fed))
        try:
            runs = [INTERMEDIATES[target.runtime](target.path, x[None], threads, target.layout) for x in fed]
            result.results.append(match(references, runs, found, target.file))
        except Exception as exc:  # one file that cannot run must not hide the others' diagnosis
            result.failures[target.file] = f"{type(exc).__name__}: {exc}"
            log.warning("%s: not diagnosed: %s", target.file, result.failures[target.file])
    return result


def _snr_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _where(e) -> str:
    return f"{e.label} ({_snr_cell(e.snr_db)} dB)" if e else "-"


def tables(d: Diagnosis) -> str:
    """A line per artifact (where its error enters, its first jump), then every boundary's SNR (columns
    numbered as in the first table)."""
    summary = []
    for i, r in enumerate(d.results, 1):
        jump = r.first_jump
        lowest = min((b.snr_db for b in r.boundaries if b.snr_db is not None), default=None)
        summary.append((f"[{i}]", r.file, _where(r.entry), f"{jump.boundary} ({_snr_cell(jump.snr_db)} dB)" if jump
                        else "none", _snr_cell(lowest), _snr_cell(r.boundaries[-1].snr_db)))
    lines = [f"ConvNeXtPose {d.variant}: SNR in dB against PyTorch fp32 at every boundary, {d.images} input(s). "
             f"Higher is closer: {CEILING_DB:g} = float rounding, fp16 ~55-75, int8 ~25-45. The error enters where "
             f"it first falls {JUMP_DB:g} dB under {CEILING_DB:g}; a jump is a later boundary {JUMP_DB:g} dB under "
             "every one before it (a dropped op, a layer int8 cannot hold).",
             format_table(("", "file", "error enters at", "first jump", "lowest", "joints"), summary)]
    if d.results:
        header = ("boundary", *(f"[{i}]" for i in range(1, len(d.results) + 1)))
        rows = [(b.label, *(_snr_cell(r.boundaries[k].snr_db) for r in d.results)) for k, b in enumerate(d.found)]
        lines += ["", format_table(header, rows)]
    lines += [f"not diagnosed {file}: {why}" for file, why in d.failures.items()]
    return "\n".join(lines)


def plot(d: Diagnosis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8.0, 0.22 * len(d.found) + 3) + 3.5, 4.5))
    x = np.arange(len(d.found))
    for r in d.results:
        snr = [np.nan if b.snr_db is None else b.snr_db for b in r.boundaries]
        ax.plot(x, snr, marker=".", label=r.file)
    ax.axhline(CEILING_DB, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, [b.label for b in d.found], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("SNR vs PyTorch fp32 (dB)")
    ax.set_title(f"ConvNeXtPose {d.variant}: error at each boundary ({d.images} input(s))")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def write_reports(d: Diagnosis, report_dir: Path) -> tuple[Path, Path]:
    report_dir = Path(report_dir)
    write_json_atomic(d.to_dict(), report_dir / DIAGNOSE_JSON)
    plot(d, report_dir / DIAGNOSE_PNG)
    return report_dir / DIAGNOSE_JSON, report_dir / DIAGNOSE_PNG
