"""A synthetic 3D-pose task that needs no download: mannequin figures on photo or procedural backgrounds.

A sample is a pose from ``pose_prior`` in a bounding-box crop, a background from
``synthetic_backgrounds`` and a figure from ``synthetic_figure``. Each is a function of
(seed, split, index, size) only, so any image can be re-rendered and the training and evaluation
splits never share an image. Targets are in the network's own output units: x, y in heatmap px,
z in depth bins (see ``targets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from models.joints import HUMAN36M
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec
from models.synthetic.backgrounds import PHOTO_DIR, render_background
from models.synthetic.figure import draw_figure
from models.synthetic.pose_prior import project_into_crop, sample_camera_pose

TRAIN, EVAL = 0, 1  # split ids: part of every sample's seed, so the two never overlap


@dataclass(frozen=True)
class TaskConfig:
    """How hard the task is; the defaults are the task the reference checkpoints are trained on."""

    photo_prob: float = 0.25  # background: crop of a photo in data/people, else procedural
    distractor_prob: float = 0.1  # random shapes (some limb-like) on the background (docs/checkpoints.md: why not more)
    yaw_range: float = 100.0  # degrees either side of facing the camera
    joint_balls: bool = True  # mannequin-style balls at shoulders, elbows, wrists, hips, knees, ankles


DEFAULT_TASK = TaskConfig()


@dataclass(frozen=True)
class Sample:
    """One rendered crop with its ground truth."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    background: np.ndarray  # (S, S, 3) uint8, the image before the figure was drawn
    mask: np.ndarray | None  # (S, S) bool, pixels covered by the figure (None if not asked for)
    joints_px: np.ndarray  # (J, 2) float32 x, y in crop px; pixel (round(y), round(x)) holds the joint
    depth_mm: np.ndarray  # (J,) float32 root-relative depth, camera z (away from the camera)


@dataclass(frozen=True)
class Batch:
    """Network-ready tensors: images in [0, 1] (not yet ImageNet-normalised) and targets."""

    images: torch.Tensor  # (N, 3, S, S) float32
    targets: torch.Tensor  # (N, J, 3) float32 in heatmap px / depth bins
    joints_px: np.ndarray  # (N, J, 2)


def sample_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(split), int(index)]))


def render_sample(
    seed: int, index: int, size: int = 256, split: int = TRAIN, heatmap_size: int | None = None,
    task: TaskConfig = DEFAULT_TASK, photo_dir: Path = PHOTO_DIR, with_mask: bool = True,
) -> Sample:
    """Deterministic in (seed, split, index, size, heatmap_size, task).

    Joints stay where the soft-argmax can reach: x_hm <= W - 1 for a ``heatmap_size`` W
    (default size / 8, the released XS and S stride).
    """
    rng = sample_rng(seed, split, index)
    w = heatmap_size or max(1, size // 8)
    proj = project_into_crop(sample_camera_pose(rng, task.yaw_range), size, rng, reach=(w - 1) * size / w)
    background = render_background(rng, size, task.photo_prob, task.distractor_prob, photo_dir)
    image, mask = draw_figure(background, proj, rng, task.joint_balls, with_mask)
    return Sample(image, background, mask, proj.joints_px.astype(np.float32), proj.depth_mm.astype(np.float32))


# ---- network units ---------------------------------------------------------------------------
def targets(joints_px: np.ndarray, depth_mm: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(..., J, 3) in the model's output units: x, y in heatmap px, z in depth bins.

    x_hm = x_px * W / S; z_bin = (z_mm / (BBOX/2) + 1) / 2 * D, clipped to [0, D - 1] like the
    soft-argmax range.
    """
    d, h, w = spec.heatmap_shape
    x = joints_px[..., 0] * w / spec.input_size
    y = joints_px[..., 1] * h / spec.input_size
    z = np.clip((depth_mm / (BBOX_3D_DEPTH_MM / 2) + 1) / 2 * d, 0, d - 1)
    return np.stack([x, y, z], axis=-1).astype(np.float32)


@dataclass(frozen=True)
class RenderedBatch:
    """Samples of a split as plain arrays: cheap to pickle from a rendering process."""

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    targets: np.ndarray  # (N, J, 3) float32 in heatmap px / depth bins
    joints_px: np.ndarray  # (N, J, 2)

    def to_batch(self, memory_format: torch.memory_format = torch.contiguous_format) -> Batch:
        # NHWC uint8 -> NCHW view: channels-last is the arrays' own memory order, so that format is copy-free
        images = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255)
        return Batch(images=images.contiguous(memory_format=memory_format), targets=torch.from_numpy(self.targets),
                     joints_px=self.joints_px)


def render_arrays(
    spec: ModelSpec, seed: int, start: int, n: int, split: int = TRAIN, task: TaskConfig = DEFAULT_TASK
) -> RenderedBatch:
    """Samples start .. start+n-1 of a split, for ``spec`` (its input size and heatmap)."""
    samples = [render_sample(seed, i, spec.input_size, split, spec.heatmap_size, task, with_mask=False)
               for i in range(start, start + n)]
    joints = np.stack([s.joints_px for s in samples])
    return RenderedBatch(images=np.stack([s.image for s in samples]),
                         targets=targets(joints, np.stack([s.depth_mm for s in samples]), spec), joints_px=joints)


def render_batch(
    spec: ModelSpec, seed: int, start: int, n: int, split: int = TRAIN, task: TaskConfig = DEFAULT_TASK
) -> Batch:
    """``render_arrays`` as network-ready tensors."""
    return render_arrays(spec, seed, start, n, split, task).to_batch()


def draw_skeletons(image: np.ndarray, skeletons: dict[tuple[int, int, int], np.ndarray], scale: int = 2) -> Image.Image:
    """The image enlarged ``scale`` times with each (J, 2) px skeleton drawn in its RGB colour."""
    size = image.shape[0]
    img = Image.fromarray(image).resize((size * scale, size * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for colour, pts in skeletons.items():
        p = pts * scale
        for a, b in HUMAN36M.skeleton:
            draw.line([tuple(p[a]), tuple(p[b])], fill=colour, width=max(1, scale))
        for x, y in p:
            draw.ellipse([x - 2 * scale, y - 2 * scale, x + 2 * scale, y + 2 * scale], outline=colour, width=1)
    return img
