"""The manifest: what an export folder holds and how it was verified. The one place JSON is
produced from the export's dataclasses, and the one place an export folder is read back
(:meth:`Manifest.read`), with a schema-version check and clear errors for anything else."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.errors import ConvNeXtPoseError, ManifestError
from common.files import path_digest, write_json_atomic
from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.contract import InputContract, output_description
from models.joints import joint_set_for
from models.spec import ModelSpec
from runtimes.versions import version_of

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 3  # 2: artifacts name their runtime; 3: verdicts, rejected artifacts, the verification record
TOOLS = ("convnextpose-export", "torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "onnx2tf", "tensorflow",
         "ai-edge-litert", "ai-edge-quantizer", "coremltools", "mediapipe", "numpy")


@dataclass(frozen=True)
class Artifact:
    """One exported file (or .mlpackage folder) and how it was verified."""

    file: str  # relative to the output folder
    format: str  # the artifact kind's format (exporters.formats), e.g. onnx-simplified, tflite
    precision: str
    layout: str  # NCHW or NHWC
    input_shape: tuple[int, ...]
    bytes: int
    sha256: str
    runtime: str  # runtimes key that verified it and that the bench times it with
    verdict: dict[str, Any]  # gates.Verdict.to_dict() (+ "evaluated_by")
    details: dict[str, Any] = field(default_factory=dict)
    #: where it was judged: this machine's CPU, then each emulated arm64 model (judging/cross_isa.py)
    verified_on: tuple[dict[str, Any], ...] = ()
    #: where it runs accelerated on a phone, by its runtime's own checker (judging/readiness.py)
    readiness: dict[str, Any] = field(default_factory=dict)

    @property
    def cross_isa_input_px(self) -> dict[str, float]:
        """Emulated CPU model -> the largest 2-D joint distance from this machine's joints, input px."""
        return {r["cpu"]: r["cross_isa_input_px"] for r in self.verified_on
                if r.get("emulated") and r.get("cross_isa_input_px") is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "precision": self.precision,
            "layout": self.layout,
            "input_shape": list(self.input_shape),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "runtime": self.runtime,
            "verdict": self.verdict,
            **({"details": self.details} if self.details else {}),
            **({"verified_on": list(self.verified_on)} if self.verified_on else {}),
            **({"readiness": self.readiness} if self.readiness else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Artifact":
        return cls(d["file"], d["format"], d["precision"], d["layout"], tuple(d["input_shape"]), d["bytes"],
                   d["sha256"], d["runtime"], d["verdict"], d.get("details", {}), tuple(d.get("verified_on", ())),
                   d.get("readiness", {}))


@dataclass(frozen=True)
class Rejection:
    """An artifact that was not published, why, and the figures behind it."""

    file: str
    format: str
    precision: str
    reason: str  # gates.CONVERSION_ERROR | gates.OVER_BUDGET | "conversion failed" | "not built"
    detail: str  # one line with the figures
    verdict: dict[str, Any] | None = None  # gates.Verdict.to_dict() when the file was measured
    details: dict[str, Any] | None = None  # what the stage tried (e.g. the adaptive int8 attempts)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "precision": self.precision, "reason": self.reason,
                "detail": self.detail, **({"verdict": self.verdict} if self.verdict else {}),
                **({"details": self.details} if self.details else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Rejection":
        return cls(d["file"], d["format"], d["precision"], d["reason"], d["detail"], d.get("verdict"), d.get("details"))


def tool_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            **{name: version_of(name) for name in TOOLS}}


def checkpoint_record(loaded: LoadedCheckpoint) -> dict[str, Any]:
    return {
        "path": str(loaded.path),
        "sha256": loaded.sha256,
        "synthetic": loaded.synthetic is not None,
        "synthetic_info": loaded.synthetic,
        "epoch": loaded.epoch,
        "head_key_style": loaded.head_key_style,
        "upsample_source": loaded.upsample_source,
    }


@dataclass(frozen=True)
class Manifest:
    """``OUT/manifest.json`` as a typed record."""

    variant: str
    spec: ModelSpec
    checkpoint: dict[str, Any]  # checkpoint_record()
    input: dict[str, Any]  # InputContract.to_dict() + layout_per_format
    output: dict[str, Any]
    joints: dict[str, Any]  # JointSet.to_dict()
    verification: dict[str, Any]  # InputSet.record(): the inputs every artifact was judged on
    gates: dict[str, Any]  # noise floor, factor, budgets (judging/gates.py)
    artifacts: tuple[Artifact, ...]
    versions: dict[str, str]
    stage_seconds: dict[str, float]
    rejected: tuple[Rejection, ...] = ()
    #: what OUT holds besides the artifacts and the manifest: golden vectors, the model card
    extras: tuple[str, ...] = ()
    calibration: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def build(cls, loaded: LoadedCheckpoint, contract: InputContract, artifacts: list[Artifact],
              stage_seconds: dict[str, float], verification: dict[str, Any], gates: dict[str, Any],
              rejected: list[Rejection] = (), calibration: dict[str, Any] | None = None,
              skipped: dict[str, str] | None = None, extras: tuple[str, ...] = ()) -> "Manifest":
        spec = loaded.spec
        layouts = {a.format: a.layout for a in artifacts}
        return cls(
            variant=loaded.matched_variant or "custom",
            spec=spec,
            checkpoint=checkpoint_record(loaded),
            input={**contract.to_dict(), "layout_per_format": layouts},
            output=output_description(spec),
            joints=joint_set_for(spec.joints).to_dict(),
            verification=verification,
            gates=gates,
            artifacts=tuple(artifacts),
            versions=tool_versions(),
            stage_seconds={k: round(v, 2) for k, v in stage_seconds.items()},
            rejected=tuple(rejected),
            extras=tuple(extras),
            calibration=calibration,
            skipped=dict(skipped or {}),
        )

    @property
    def normalization_folded(self) -> bool:
        return bool(self.input["normalization_folded"])

    @property
    def files(self) -> set[str]:
        """Everything this export put in OUT but the manifest itself."""
        return {a.file for a in self.artifacts} | set(self.extras)

    @property
    def judged_on(self) -> str:
        return self.verification["judged_on"]

    def with_artifacts(self, artifacts: list[Artifact]) -> "Manifest":
        return replace(self, artifacts=tuple(artifacts))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "variant": self.variant,
            "spec": self.spec.to_dict(),
            "checkpoint": self.checkpoint,
            "input": self.input,
            "output": self.output,
            "joints": self.joints,
            "verification": self.verification,
            "gates": self.gates,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "rejected": [r.to_dict() for r in self.rejected],
            "extras": list(self.extras),
            "versions": self.versions,
            "stage_seconds": self.stage_seconds,
        }
        if self.calibration:
            d["calibration"] = self.calibration
        if self.skipped:
            d["skipped"] = self.skipped
        return d

    def write(self, out_dir: Path) -> None:
        write_json_atomic(self.to_dict(), Path(out_dir) / MANIFEST_NAME)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema version {version!r}, this tool reads version {SCHEMA_VERSION}; "
                                "re-export with this version of convnextpose")
        try:
            return cls(
                variant=d["variant"],
                spec=ModelSpec.from_dict(d["spec"]),
                checkpoint=d["checkpoint"],
                input=d["input"],
                output=d["output"],
                joints=d["joints"],
                verification=d["verification"],
                gates=d["gates"],
                artifacts=tuple(Artifact.from_dict(a) for a in d["artifacts"]),
                versions=d["versions"],
                stage_seconds=d["stage_seconds"],
                rejected=tuple(Rejection.from_dict(r) for r in d.get("rejected", [])),
                extras=tuple(d.get("extras", [])),
                calibration=d.get("calibration"),
                skipped=d.get("skipped", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: not a valid manifest ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, out_dir: Path) -> "Manifest":
        """The manifest of the export in ``out_dir``; ManifestError names what is wrong."""
        path = Path(out_dir) / MANIFEST_NAME
        if not Path(out_dir).is_dir():
            raise ManifestError(f"{out_dir} is not a folder: run `convnextpose export --out {out_dir}` first")
        if not path.is_file():
            raise ManifestError(f"{path} not found: {out_dir} is not an export folder; run `convnextpose export` first")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: not a manifest (top level is a {type(data).__name__})")
        return cls.from_dict(data, str(path))

    @classmethod
    def read_if_present(cls, out_dir: Path) -> "Manifest | None":
        """The previous export's manifest, or None when there is none or it cannot be read."""
        try:
            return cls.read(out_dir)
        except ManifestError:
            return None

    def tampered(self, out_dir: Path, files: set[str] | None = None) -> dict[str, str]:
        """Artifacts (all, or ``files``) that are no longer what was verified: file -> what is wrong."""
        problems = {}
        for art in self.artifacts:
            if files is not None and art.file not in files:
                continue
            path = Path(out_dir) / art.file
            if not path.exists():
                problems[art.file] = "missing"
            elif path_digest(path) != (art.bytes, art.sha256):
                problems[art.file] = "changed since it was verified (sha256 differs from the manifest)"
        return problems

    def refuse_tampered(self, out_dir: Path, files: set[str] | None = None) -> None:
        """ManifestError naming every artifact that is missing or changed."""
        problems = self.tampered(out_dir, files)
        if problems:
            listed = "; ".join(f"{f}: {why}" for f, why in problems.items())
            raise ManifestError(f"{out_dir}: {len(problems)} artifact(s) are not the verified ones ({listed}); "
                                "re-export, or restore the files")

    def load_checkpoint(self) -> LoadedCheckpoint:
        """The checkpoint this export was made from, checked against the manifest's spec and sha256."""
        loaded = load_checkpoint(self.checkpoint["path"], self.spec, self.spec.joints)
        if loaded.sha256 != self.checkpoint["sha256"]:
            raise ConvNeXtPoseError(f"checkpoint {loaded.path} changed since the export (sha256 differs from the "
                                    "manifest)")
        return loaded


def listed_files(out_dir: Path) -> set[str]:
    """Files an existing manifest in ``out_dir`` lists, of any schema version (for cleaning up after a
    re-export); empty when there is no readable manifest."""
    try:
        data = json.loads((Path(out_dir) / MANIFEST_NAME).read_text())
        files = {Path(a["file"]).name for a in data.get("artifacts", []) if isinstance(a, dict) and a.get("file")}
        return files | {Path(e).name for e in data.get("extras", []) if isinstance(e, str)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
