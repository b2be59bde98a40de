"""Artifact records and the manifest: the one place JSON is produced from the export's dataclasses."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.contract import OUTPUT_NAME, InputContract
from models.checkpoint import LoadedCheckpoint
from models.joints import joint_set_for
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "onnx2tf", "tensorflow", "ai-edge-litert",
         "coremltools", "numpy")


@dataclass(frozen=True)
class Artifact:
    """One exported file (or .mlpackage folder) and how it was verified."""

    file: str  # relative to the output folder
    format: str  # onnx | onnx-simplified | tflite | coreml-mlmodel | coreml-mlpackage
    precision: str
    layout: str  # NCHW or NHWC
    input_shape: tuple[int, ...]
    bytes: int
    sha256: str
    parity: dict[str, Any]  # ParityReport.to_dict() or {"status": "not measured", "reason": ...}
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "precision": self.precision,
            "layout": self.layout,
            "input_shape": list(self.input_shape),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "parity": self.parity,
            **({"details": self.details} if self.details else {}),
        }


def path_digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder's files in sorted order (for .mlpackage)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.sha256(), 0
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def output_description(spec: ModelSpec) -> dict[str, Any]:
    d, h, w = spec.heatmap_shape
    s = spec.input_size
    return {
        "name": OUTPUT_NAME,
        "shape": [1, spec.joints, 3],
        "dtype": "float32",
        "units": "x, y in heatmap pixels; z in depth bins (soft-argmax expectation)",
        "heatmap_shape_dhw": [d, h, w],
        "to_input_pixels": f"x_px = x * {s} / {w}; y_px = y * {s} / {h}",
        "to_original_image": "x_img = bbox_x + x_px * bbox_w / " f"{s}; y_img = bbox_y + y_px * bbox_h / {s}",
        "to_depth_mm": f"z_mm = (z / {d} * 2 - 1) * {BBOX_3D_DEPTH_MM / 2:g}  (relative to the root joint)",
    }


def embedded_metadata(loaded: LoadedCheckpoint, contract: InputContract) -> dict[str, str]:
    """The manifest's essentials, as string pairs every format can carry (ONNX, TFLite, CoreML)."""
    spec = loaded.spec
    joints = joint_set_for(spec.joints)
    return {
        "model": "ConvNeXtPose",
        "variant": loaded.matched_variant or "custom",
        "checkpoint_sha256": loaded.sha256,
        "synthetic_weights": json.dumps(loaded.synthetic) if loaded.synthetic else "no",
        "input": json.dumps(contract.to_dict()),
        "output": json.dumps(output_description(spec)),
        "joint_names": json.dumps(list(joints.names)),
        "skeleton": json.dumps([list(e) for e in joints.skeleton]),
    }


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(
    loaded: LoadedCheckpoint,
    contract: InputContract,
    artifacts: list[Artifact],
    stage_seconds: dict[str, float],
    verification_inputs: tuple[str, ...],
    layouts: dict[str, str],
) -> dict[str, Any]:
    spec = loaded.spec
    return {
        "schema_version": SCHEMA_VERSION,
        "variant": loaded.matched_variant or "custom",
        "spec": spec.to_dict(),
        "checkpoint": {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "synthetic": loaded.synthetic is not None,
            "synthetic_info": loaded.synthetic,
            "epoch": loaded.epoch,
            "head_key_style": loaded.head_key_style,
            "upsample_source": loaded.upsample_source,
        },
        "input": {**contract.to_dict(), "layout_per_format": layouts},
        "output": output_description(spec),
        "joints": joint_set_for(spec.joints).to_dict(),
        "verification_inputs": list(verification_inputs),
        "artifacts": [a.to_dict() for a in artifacts],
        "versions": tool_versions(),
        "stage_seconds": {k: round(v, 2) for k, v in stage_seconds.items()},
    }


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
