"""`convnextpose demo IMAGE`: each backend's 2-D skeleton over the photo, side by side."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks.backends import backends_from_manifest, open_backend
from common.errors import ConvNeXtPoseError
from common.images import read_rgb
from judging.inputs import square_crops
from judging.manifest import Manifest
from models.preprocessing import normalise

log = logging.getLogger(__name__)
PANEL = 384  # pixels per panel side
_LEFT_COLOUR, _RIGHT_COLOUR, _CENTRE_COLOUR = (66, 135, 245), (245, 90, 66), (80, 220, 100)


def _edge_colour(names: list[str], a: int, b: int) -> tuple[int, int, int]:
    side = {names[a][:2], names[b][:2]}
    return _LEFT_COLOUR if "L_" in side else _RIGHT_COLOUR if "R_" in side else _CENTRE_COLOUR


def draw_skeleton(crop: Image.Image, joints_px: np.ndarray, skeleton: list, names: list[str],
                  title: str) -> Image.Image:
    panel = crop.resize((PANEL, PANEL), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(panel)
    scale = PANEL / crop.size[0]
    pts = joints_px[:, :2] * scale
    for a, b in skeleton:
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=_edge_colour(names, a, b), width=3)
    for x, y in pts:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 255, 255), outline=(0, 0, 0))
    font = ImageFont.load_default()  # ships with Pillow: nothing is downloaded
    draw.rectangle([0, 0, PANEL, 18], fill=(0, 0, 0))
    draw.text((4, 3), title, fill=(255, 255, 255), font=font)
    return panel


def _photo_crop(image: Path, size: int) -> Image.Image:
    return square_crops(read_rgb(image))[0][1].resize((size, size), Image.Resampling.BILINEAR)


def _synthetic_crop(index: int, manifest: Manifest) -> tuple[Image.Image, np.ndarray]:
    """Evaluation-split image ``index`` of the synthetic task (never trained on) and its true joints in px."""
    from models.synthetic.task import EVAL, render_sample

    size, heatmap = manifest.spec.input_size, manifest.spec.heatmap_size
    sample = render_sample(0, index, size, EVAL, heatmap)
    return Image.fromarray(sample.image), sample.joints_px


def run_demo(image: Path | None, out_dir: Path, output: Path | None = None, threads: int = 2,
             synthetic_index: int | None = None) -> Path:
    """One panel per backend (and the ground truth first, for a synthetic image); returns the PNG path."""
    if (image is None) == (synthetic_index is None):
        raise ConvNeXtPoseError("demo needs exactly one of IMAGE or --synthetic INDEX")
    manifest = Manifest.read(out_dir)
    size = manifest.spec.input_size
    skeleton, names = manifest.joints["skeleton"], manifest.joints["names"]
    panels = []
    if synthetic_index is not None:
        crop, truth = _synthetic_crop(synthetic_index, manifest)
        panels.append(draw_skeleton(crop, truth, skeleton, names, f"ground truth (synthetic eval #{synthetic_index})"))
        stem = f"synthetic{synthetic_index}"
    else:
        crop, stem = _photo_crop(image, size), image.stem
    x = (np.asarray(crop, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    if not manifest.normalization_folded:
        x = normalise(x)
    to_px = size / manifest.spec.heatmap_size
    synthetic = manifest.checkpoint.get("synthetic_info") or {}
    label = f" [{synthetic['kind']} weights]" if synthetic else ""
    for backend in backends_from_manifest(manifest):
        opened = open_backend(backend, out_dir, threads, manifest)
        runtime = "reference evaluator" if not opened.timed else opened.runtime
        joints = opened.predict(x)[0] * to_px
        panels.append(draw_skeleton(crop, joints, skeleton, names, f"{backend.name} ({runtime.split(' (')[0]}){label}"))
    sheet = Image.new("RGB", (PANEL * len(panels), PANEL), (255, 255, 255))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * PANEL, 0))
    output = output or out_dir / f"demo_{stem}.png"
    sheet.save(output)
    log.info("wrote %s (%d backends)", output, len(panels))
    return output
