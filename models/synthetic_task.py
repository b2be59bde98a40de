"""A synthetic 3D-pose task that needs no download: person-like figures on varied backgrounds.

Each sample is a function of (seed, split, index) only, so any image can be re-rendered and the
training and evaluation splits never share an image. Figures are filled capsules (limbs), a
torso, a head with a nose, hands and feet, drawn far-to-near with depth shading; the person's
left side is darker than the right so left/right is decidable from any view. Targets are in the
network's own output units: x, y in heatmap px, z in depth bins (see ``targets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from models.joints import HUMAN36M
from models.pose_prior import EXTRA_POINTS, HEAD_RADIUS_MM, J, Projection, project_into_crop, sample_camera_pose
from models.spec import BBOX_3D_DEPTH_MM, ModelSpec

PHOTO_DIR = Path(__file__).resolve().parents[1] / "data" / "people"
TRAIN, EVAL = 0, 1  # split ids: part of every sample's seed, so the two never overlap

_N = {name: i for i, name in enumerate(HUMAN36M.names)}
_E = {name: J + i for i, name in enumerate(EXTRA_POINTS)}
# (from, to, radius mm, colour slot, side) -- side: +1 left, -1 right, 0 centre
_PARTS: tuple[tuple[str, str, float, str, int], ...] = (
    ("R_Hip", "L_Hip", 85, "pants", 0),
    ("Pelvis", "Torso", 120, "shirt", 0),
    ("Torso", "Neck", 125, "shirt", 0),
    ("R_Shoulder", "L_Shoulder", 65, "shirt", 0),
    ("Neck", "Head_Centre", 50, "skin", 0),
    ("L_Hip", "L_Knee", 70, "pants", 1), ("L_Knee", "L_Ankle", 52, "pants", 1), ("L_Ankle", "L_Foot", 40, "shoes", 1),
    ("R_Hip", "R_Knee", 70, "pants", -1), ("R_Knee", "R_Ankle", 52, "pants", -1), ("R_Ankle", "R_Foot", 40, "shoes", -1),
    ("L_Shoulder", "L_Elbow", 48, "shirt", 1), ("L_Elbow", "L_Wrist", 40, "skin", 1), ("L_Wrist", "L_Hand", 45, "skin", 1),
    ("R_Shoulder", "R_Elbow", 48, "shirt", -1), ("R_Elbow", "R_Wrist", 40, "skin", -1), ("R_Wrist", "R_Hand", 45, "skin", -1),
    ("Head_Centre", "Head_Centre", HEAD_RADIUS_MM, "skin", 0),
    ("Nose", "Nose", 28, "nose", 0),
)
# Mannequin joint balls (radius mm): a visible, local mark at each limb joint, as on an artist's
# wooden mannequin. Without them a network trained for minutes learns the torso and an average
# limb layout, and its predictions shrink toward the body centre.
_BALLS: dict[str, float] = {"Shoulder": 55, "Elbow": 47, "Wrist": 42, "Hip": 72, "Knee": 60, "Ankle": 48}
_LEFT_SHADE = 0.62  # the person's left side is darker: a consistent left/right cue
_MIN_CONTRAST = 70  # L1 distance (0..765) between a figure colour and the mean background


@dataclass(frozen=True)
class TaskConfig:
    """How hard the task is; the defaults are the task the reference checkpoints are trained on."""

    photo_prob: float = 0.4  # background: crop of a photo in data/people, else procedural
    distractor_prob: float = 0.6  # random shapes (some limb-like) on the background
    yaw_range: float = 100.0  # degrees either side of facing the camera
    joint_balls: bool = True  # mannequin-style balls at shoulders, elbows, wrists, hips, knees, ankles


DEFAULT_TASK = TaskConfig()


@dataclass(frozen=True)
class Sample:
    """One rendered crop with its ground truth."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    background: np.ndarray  # (S, S, 3) uint8, the image before the figure was drawn
    mask: np.ndarray  # (S, S) bool, pixels covered by the figure
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


# ---- backgrounds -----------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _photos(photo_dir: str) -> tuple[np.ndarray, ...]:
    path = Path(photo_dir)
    files = sorted(p for p in path.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")) if path.is_dir() else []
    return tuple(np.asarray(Image.open(f).convert("RGB")) for f in files)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) in [0, 1]: bilinearly upsampled random grid -- cheap low-frequency texture."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _photo_background(rng: np.random.Generator, size: int, photos: tuple[np.ndarray, ...]) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    gain = rng.uniform(0.6, 1.4, 3)  # colour jitter: per-channel gain, global brightness shift
    return img * gain + rng.uniform(-40, 40)


def _procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = _random_colour(rng), _random_colour(rng)
    kind = rng.integers(4)
    if kind == 0:  # multi-octave noise
        t = 0.6 * _smooth_noise(rng, size, int(rng.integers(2, 6))) + 0.4 * _smooth_noise(rng, size, int(rng.integers(8, 40)))
    elif kind == 1:  # stripes / checker
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 20) * 2 * np.pi / size
        t = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy))
        if rng.random() < 0.5:
            t = t * (0.5 + 0.5 * np.sin(freq * (-np.sin(ang) * xx + np.cos(ang) * yy)))
    elif kind == 2:  # linear gradient
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        ang = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)), 0, 1)
    else:  # flat with a little noise
        t = 0.15 * _smooth_noise(rng, size, 16)
    return a + (b - a) * t[..., None]


def _distractors(rng: np.random.Generator, img: Image.Image) -> None:
    """Random shapes, some limb-like, so the network must find the figure, not just 'something'."""
    draw = ImageDraw.Draw(img)
    size = img.size[0]
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(int(c) for c in _random_colour(rng))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.03, 0.3, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h], fill=colour, width=int(max(1, size * rng.uniform(0.01, 0.04))))


def render_background(
    rng: np.random.Generator, size: int, task: TaskConfig = DEFAULT_TASK, photo_dir: Path = PHOTO_DIR
) -> np.ndarray:
    photos = _photos(str(photo_dir))
    use_photo = photos and rng.random() < task.photo_prob
    img = _photo_background(rng, size, photos) if use_photo else _procedural_background(rng, size)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < task.distractor_prob:
        _distractors(rng, pil)
    return np.asarray(pil)


# ---- the figure ------------------------------------------------------------------------------
def _capsule(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, ra: float, rb: float, fill) -> None:
    """Filled capsule: discs at both ends joined by a quadrilateral (tapers if ra != rb)."""
    for (x, y), r in ((a, ra), (b, rb)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    d = b - a
    length = float(np.hypot(*d))
    if length > 1e-6:
        n = np.array([-d[1], d[0]]) / length
        quad = [tuple(a + n * ra), tuple(b + n * rb), tuple(b - n * rb), tuple(a - n * ra)]
        draw.polygon(quad, fill=fill)


def _palette(rng: np.random.Generator, background_mean: np.ndarray) -> dict[str, np.ndarray]:
    def contrasting() -> np.ndarray:
        for _ in range(20):
            c = rng.uniform(70, 255, 3).astype(np.float32)  # bright enough for the left-side shade to show
            if np.abs(c - background_mean).sum() >= _MIN_CONTRAST:
                return c
        return 255 - background_mean  # fallback: the opposite colour
    skin = contrasting()
    return {"skin": skin, "shirt": contrasting(), "pants": contrasting(), "shoes": contrasting(),
            "nose": np.clip(skin * 0.55 + rng.uniform(-20, 20, 3), 0, 255), "joint": contrasting()}


def draw_figure(
    background: np.ndarray, proj: Projection, rng: np.random.Generator, joint_balls: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): the figure drawn far-to-near over ``background``."""
    size = background.shape[0]
    pts = np.concatenate([proj.joints_px, proj.extra_px])
    depth = np.concatenate([proj.depth_mm, proj.extra_depth_mm])
    palette = _palette(rng, background.reshape(-1, 3).mean(0))
    thickness = rng.uniform(0.8, 1.2)  # slim to stocky
    parts = []
    for a_name, b_name, radius, slot, side in _PARTS:
        a, b = (_N[a_name] if a_name in _N else _E[a_name]), (_N[b_name] if b_name in _N else _E[b_name])
        mean_depth = (depth[a] + depth[b]) / 2
        if a == b == _N["Nose"]:
            mean_depth -= 1.0  # the nose sits on the head's surface: in front when it is nearer than the head
        # head and nose keep their size: the head-top joint must stay inside the head disc
        parts.append((mean_depth, a, b, radius * (thickness if a != b else 1.0), slot, side))
    if joint_balls:
        for name, i in _N.items():
            kind = name[2:]
            if kind in _BALLS:
                # drawn just after the nearer of its own limbs, so the limbs do not hide it
                nearest = min(p[0] for p in parts if i in (p[1], p[2]) and p[1] != p[2])
                parts.append((nearest - 0.5, i, i, _BALLS[kind] * thickness, "joint", 1 if name[0] == "L" else -1))
    img = Image.fromarray(background.copy())
    mask = Image.new("L", (size, size), 0)
    draw, mask_draw = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    for mean_depth, a, b, radius, slot, side in sorted(parts, key=lambda p: -p[0]):  # painter's order
        shade = (_LEFT_SHADE if side > 0 else 1.0) * min(max(1 - 0.25 * mean_depth / 1000, 0.7), 1.3)
        colour = tuple(min(int(c * shade), 255) for c in palette[slot])
        # at least 1 px, so limb ends (the joints) stay visible on small inputs
        ra, rb = max(radius * proj.px_per_mm[a], 1.0), max(radius * proj.px_per_mm[b], 1.0)
        _capsule(draw, pts[a], pts[b], ra, rb, colour)
        _capsule(mask_draw, pts[a], pts[b], ra, rb, 255)
    if rng.random() < 0.5:  # soften the aliased edges sometimes, as a camera would
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * size / 256))
    out = np.asarray(img, dtype=np.float32) + rng.standard_normal((size, size, 3), dtype=np.float32) * rng.uniform(0, 6)
    return np.clip(out, 0, 255).astype(np.uint8), np.asarray(mask) > 0


def render_sample(
    seed: int, index: int, size: int = 256, split: int = TRAIN, heatmap_size: int | None = None,
    task: TaskConfig = DEFAULT_TASK, photo_dir: Path = PHOTO_DIR,
) -> Sample:
    """Deterministic in (seed, split, index, size, heatmap_size, task).

    Joints stay where the soft-argmax can reach: x_hm <= W - 1 for a ``heatmap_size`` W
    (default size / 8, the released XS and S stride).
    """
    rng = sample_rng(seed, split, index)
    w = heatmap_size or max(1, size // 8)
    proj = project_into_crop(sample_camera_pose(rng, task.yaw_range), size, rng, reach=(w - 1) * size / w)
    background = render_background(rng, size, task, photo_dir)
    image, mask = draw_figure(background, proj, rng, task.joint_balls)
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


def render_batch(
    spec: ModelSpec, seed: int, start: int, n: int, split: int = TRAIN, task: TaskConfig = DEFAULT_TASK
) -> Batch:
    """Samples start .. start+n-1 of a split, as tensors for ``spec`` (its input size and heatmap)."""
    samples = [render_sample(seed, i, spec.input_size, split, spec.heatmap_size, task) for i in range(start, start + n)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float().div_(255)
    joints = np.stack([s.joints_px for s in samples])
    t = targets(joints, np.stack([s.depth_mm for s in samples]), spec)
    return Batch(images=images.contiguous(), targets=torch.from_numpy(t), joints_px=joints)


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
