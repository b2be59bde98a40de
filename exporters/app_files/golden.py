"""Golden vectors: what an app's own CI (an XCTest, an Android instrumentation test) needs to check, on
the phone, that the integrated file gives the joints this pipeline verified -- with no Python.

``OUT/golden/`` holds a handful of the verification inputs as 256x256 RGB PNGs, the exact float
tensor each artifact takes (``.nchw.f32`` / ``.nhwc.f32``: little-endian float32, shape in the JSON),
and ``golden.json``: per artifact, which input file it takes, the joints it produced here and the
tolerance a result produced elsewhere is held to. ``convnextpose check-golden OUT RESULTS.json``
judges such results (judging/golden.py, with the tolerances and why they are what they are).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from judging.golden import FORMAT_VERSION, GOLDEN_JSON, tolerance_fields
from judging.manifest import Artifact, Manifest

NUM_GOLDEN = 4


def pick_rows(judged: np.ndarray, photos: np.ndarray, n: int = NUM_GOLDEN) -> list[int]:
    """A few judged inputs, and a photo crop when the judged ones are not photos (what an app sees)."""
    judged_rows = [int(i) for i in np.flatnonzero(judged)]
    if not photos.any() or photos[judged_rows].any():
        return judged_rows[:n]
    return judged_rows[: n - 1] + [int(np.flatnonzero(photos)[0])]


def write(folder: Path, rgb01: np.ndarray, prepared: np.ndarray, sources: list[str], outputs: dict[str, np.ndarray],
          artifacts: list[Artifact], reference: np.ndarray, manifest: Manifest) -> dict:
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
        "tolerances": "tolerance_input_px: the file on a phone's CPU, in the runtime it was verified with; "
                      "delegate_tolerance_input_px: on a GPU/NPU delegate (fp16 or the delegate's own integer "
                      "kernels). Each with its basis; cross_isa_input_px: measured distance of the emulated arm64 "
                      "cores' joints from these.",
        "joint_names": manifest.joints["names"],
        "units": manifest.output,
        "inputs": inputs,
        "reference_pytorch_fp32": {inp["id"]: np.round(ref, 6).tolist() for inp, ref in zip(inputs, reference)},
        "artifacts": {},
    }
    for art in artifacts:
        feed = "png" if art.layout == "image" else art.layout.lower()
        record["artifacts"][art.file] = {
            "format": art.format, "precision": art.precision, "sha256": art.sha256, "input": feed,
            **tolerance_fields(art, manifest),
            "joints": {inp["id"]: np.round(j, 6).tolist() for inp, j in zip(inputs, outputs[art.file])},
        }
    (folder / GOLDEN_JSON).write_text(json.dumps(record, indent=1) + "\n")
    return record
