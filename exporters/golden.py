"""Golden vectors: what an app's own CI (an XCTest, an Android instrumentation test) needs to check, on
the phone, that the integrated file gives the joints this pipeline verified -- with no Python.

``OUT/golden/`` holds a handful of the verification inputs as 256x256 RGB PNGs, the exact float
tensor each artifact takes (``.nchw.f32`` / ``.nhwc.f32``: little-endian float32, shape in the JSON),
and ``golden.json``: per artifact, which input file it takes, the joints it produced here and the
tolerance a result produced elsewhere is held to. ``convnextpose check-golden OUT RESULTS.json``
judges such results (README "Golden vectors").

Tolerances, per joint, 2-D distance in input px from the artifact's own golden joints: an fp32 file
its fp32 tolerance (another CPU is another summation order: exporters/gates.py); an fp16 or integer
file its precision budget (another runtime rounds in other places; a GPU delegate computes an fp32
file in fp16 too: judge it with the fp16 budget, ``--budget fp16``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import ConvNeXtPoseError
from common.tables import format_table
from exporters.manifest import Artifact, Manifest
from models.spec import BBOX_3D_DEPTH_MM

GOLDEN_DIR = "golden"
GOLDEN_JSON = "golden.json"
FORMAT_VERSION = 1
NUM_GOLDEN = 4


def pick_rows(judged: np.ndarray, photos: np.ndarray, n: int = NUM_GOLDEN) -> list[int]:
    """A few judged inputs, and a photo crop when the judged ones are not photos (what an app sees)."""
    judged_rows = [int(i) for i in np.flatnonzero(judged)]
    if not photos.any() or photos[judged_rows].any():
        return judged_rows[:n]
    return judged_rows[: n - 1] + [int(np.flatnonzero(photos)[0])]


def artifact_tolerance(art: Artifact) -> float:
    """Input px a result produced elsewhere may move from this artifact's golden joints."""
    v = art.verdict
    return v["conversion"]["tolerance_input_px"] if v["conversion"] else v["budget_input_px"]


def write(folder: Path, rgb01: np.ndarray, prepared: np.ndarray, sources: list[str], outputs: dict[str, np.ndarray],
          artifacts: list[Artifact], reference: np.ndarray, joint_names: list[str], units: dict) -> dict:
    """Write golden/ into ``folder`` for the rows given (already selected); returns golden.json's content."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    for i, (image, tensor, source) in enumerate(zip(rgb01, prepared, sources)):
        name = f"input_{i:03d}"
        pixels = np.clip(np.round(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{name}.png")
        nchw = np.ascontiguousarray(tensor[None], dtype="<f4")
        nhwc = np.ascontiguousarray(tensor[None].transpose(0, 2, 3, 1), dtype="<f4")
        (folder / f"{name}.nchw.f32").write_bytes(nchw.tobytes())
        (folder / f"{name}.nhwc.f32").write_bytes(nhwc.tobytes())
        inputs.append({"id": name, "source": source, "png": f"{name}.png",
                       "nchw": {"file": f"{name}.nchw.f32", "shape": list(nchw.shape)},
                       "nhwc": {"file": f"{name}.nhwc.f32", "shape": list(nhwc.shape)}})
    record = {
        "format_version": FORMAT_VERSION,
        "about": "Feed each artifact its input file (png: the picture, for a Core ML image input; nchw/nhwc: "
                 "little-endian float32 tensors of the given shape), read 'joints' (J x 3), and compare each joint's "
                 "(x, y) with this file's: the 2-D distance in input px (x, y times input_size / heatmap size) must "
                 "be <= tolerance_input_px. Depth is reported, not judged.",
        "joint_names": joint_names,
        "units": units,
        "inputs": inputs,
        "reference_pytorch_fp32": {inp["id"]: np.round(ref, 6).tolist() for inp, ref in zip(inputs, reference)},
        "artifacts": {},
    }
    for art in artifacts:
        feed = "png" if art.layout == "image" else art.layout.lower()
        record["artifacts"][art.file] = {
            "format": art.format, "precision": art.precision, "sha256": art.sha256, "input": feed,
            "tolerance_input_px": artifact_tolerance(art),
            "joints": {inp["id"]: np.round(j, 6).tolist() for inp, j in zip(inputs, outputs[art.file])},
        }
    (folder / GOLDEN_JSON).write_text(json.dumps(record, indent=1) + "\n")
    return record


# ---- judging results produced elsewhere -----------------------------------------------------------
@dataclass(frozen=True)
class JointCheck:
    input_id: str
    joint: str
    error_input_px: float
    depth_error_mm: float
    tolerance_input_px: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error_input_px)) and self.error_input_px <= self.tolerance_input_px


def check(out_dir: Path, results: dict, budget_family: str | None = None) -> tuple[str, list[JointCheck]]:
    """Judge ``results`` ({"artifact": file, "joints": {input id: J x 3}}) against OUT's golden vectors.
    ``budget_family`` ("fp16"): hold it to that budget instead (a GPU delegate running an fp32 file)."""
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    path = out_dir / GOLDEN_DIR / GOLDEN_JSON
    if not path.is_file():
        raise ConvNeXtPoseError(f"{path} not found: re-export (golden vectors are written by every export)")
    golden = json.loads(path.read_text())
    name = results.get("artifact")
    if name not in golden["artifacts"]:
        raise ConvNeXtPoseError(f"results name artifact {name!r}; {path} has golden joints for "
                                f"{', '.join(golden['artifacts'])}")
    manifest.refuse_tampered(out_dir, {name})  # golden joints are only worth something for the verified file
    entry = golden["artifacts"][name]
    tolerance = entry["tolerance_input_px"]
    if budget_family:
        tolerance = manifest.gates["budgets_input_px"][budget_family]
    spec = manifest.spec
    to_input, to_mm = spec.input_size / spec.heatmap_size, BBOX_3D_DEPTH_MM / spec.depth_bins
    checks = []
    for input_id, expected in entry["joints"].items():
        got = results.get("joints", {}).get(input_id)
        if got is None:
            raise ConvNeXtPoseError(f"results have no joints for golden input {input_id!r}")
        got, expected = np.asarray(got, dtype=np.float64).reshape(-1, 3), np.asarray(expected, dtype=np.float64)
        if got.shape != expected.shape:
            raise ConvNeXtPoseError(f"results for {input_id}: joints of shape {list(got.shape)}, expected "
                                    f"{list(expected.shape)}")
        err = np.linalg.norm(got[:, :2] - expected[:, :2], axis=1) * to_input
        depth = np.abs(got[:, 2] - expected[:, 2]) * to_mm
        checks += [JointCheck(input_id, j, float(e), float(d), tolerance)
                   for j, e, d in zip(golden["joint_names"], err, depth)]
    return name, checks


def report(name: str, checks: list[JointCheck]) -> str:
    rows = []
    for input_id in dict.fromkeys(c.input_id for c in checks):
        mine = [c for c in checks if c.input_id == input_id]
        worst = max(mine, key=lambda c: c.error_input_px)
        failed = [c.joint for c in mine if not c.passed]
        rows.append((input_id, f"{worst.error_input_px:.3g}", worst.joint, f"{worst.tolerance_input_px:.3g}",
                     f"{max(c.depth_error_mm for c in mine):.3g}",
                     "ok" if not failed else f"FAIL: {', '.join(failed)}"))
    table = format_table(("input", "max 2-D error input px", "at joint", "tolerance", "max depth error mm",
                          "verdict per joint"), rows)
    passed = sum(c.passed for c in checks)
    return f"{name}: {passed} of {len(checks)} joints within tolerance\n{table}"
