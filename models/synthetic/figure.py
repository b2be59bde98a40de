"""A person-like mannequin figure drawn from a projected 3D pose: capsule limbs, torso, head, joint balls.

Parts are drawn far-to-near (painter's order) with depth shading; the person's left side is darker
than the right, a consistent left/right cue; colours are random but contrast with the background.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.joints import HUMAN36M
from models.synthetic.pose_prior import EXTRA_POINTS, HEAD_RADIUS_MM, J, Projection

_N = {name: i for i, name in enumerate(HUMAN36M.names)}
_E = {name: J + i for i, name in enumerate(EXTRA_POINTS)}
# (from, to, radius mm, colour slot, side) -- side: +1 left, -1 right, 0 centre
_PARTS: tuple[tuple[str, str, float, str, int], ...] = (
    ("R_Hip", "L_Hip", 85, "pants", 0),
    ("Pelvis", "Torso", 120, "shirt", 0),
    ("Torso", "Neck", 125, "shirt", 0),
    ("R_Shoulder", "L_Shoulder", 65, "shirt", 0),
    ("Neck", "Head_Centre", 50, "skin", 0),
    ("L_Hip", "L_Knee", 70, "pants", 1), ("L_Knee", "L_Ankle", 52, "pants", 1),
    ("L_Ankle", "L_Foot", 40, "shoes", 1),
    ("R_Hip", "R_Knee", 70, "pants", -1), ("R_Knee", "R_Ankle", 52, "pants", -1),
    ("R_Ankle", "R_Foot", 40, "shoes", -1),
    ("L_Shoulder", "L_Elbow", 48, "shirt", 1), ("L_Elbow", "L_Wrist", 40, "skin", 1),
    ("L_Wrist", "L_Hand", 45, "skin", 1),
    ("R_Shoulder", "R_Elbow", 48, "shirt", -1), ("R_Elbow", "R_Wrist", 40, "skin", -1),
    ("R_Wrist", "R_Hand", 45, "skin", -1),
    ("Head_Centre", "Head_Centre", HEAD_RADIUS_MM, "skin", 0),
    ("Nose", "Nose", 28, "nose", 0),
)
# Mannequin joint balls (radius mm): a visible, local mark at each limb joint, as on an artist's
# wooden mannequin. Without them a network trained for minutes learns the torso and an average
# limb layout, and its predictions shrink toward the body centre.
_BALLS: dict[str, float] = {"Shoulder": 55, "Elbow": 47, "Wrist": 42, "Hip": 72, "Knee": 60, "Ankle": 48}
_LEFT_SHADE = 0.62  # the person's left side is darker: a consistent left/right cue
_MIN_CONTRAST = 70  # L1 distance (0..765) between a figure colour and the mean background


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
    background: np.ndarray, proj: Projection, rng: np.random.Generator, joint_balls: bool = True, with_mask: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, mask): the figure drawn far-to-near over ``background``; mask None unless ``with_mask``."""
    size = background.shape[0]
    pts = np.concatenate([proj.joints_px, proj.extra_px])
    depth = np.concatenate([proj.depth_mm, proj.extra_depth_mm])
    palette = _palette(rng, background[::4, ::4].reshape(-1, 3).mean(0))  # a 1/16 sample is as good, and 10x cheaper
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
    mask = Image.new("L", (size, size), 0) if with_mask else None
    draw = ImageDraw.Draw(img)
    mask_draw = ImageDraw.Draw(mask) if mask is not None else None
    for mean_depth, a, b, radius, slot, side in sorted(parts, key=lambda p: -p[0]):  # painter's order
        shade = (_LEFT_SHADE if side > 0 else 1.0) * min(max(1 - 0.25 * mean_depth / 1000, 0.7), 1.3)
        colour = tuple(min(int(c * shade), 255) for c in palette[slot])
        # at least 1 px, so limb ends (the joints) stay visible on small inputs
        ra, rb = max(radius * proj.px_per_mm[a], 1.0), max(radius * proj.px_per_mm[b], 1.0)
        _capsule(draw, pts[a], pts[b], ra, rb, colour)
        if mask_draw is not None:
            _capsule(mask_draw, pts[a], pts[b], ra, rb, 255)
    if rng.random() < 0.5:  # soften the aliased edges sometimes, as a camera would
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * size / 256))
    out = rng.standard_normal((size, size, 3), dtype=np.float32)  # sensor noise, in place: this runs per image
    out *= rng.uniform(0, 6)
    out += np.asarray(img)
    return np.clip(out, 0, 255, out=out).astype(np.uint8), (np.asarray(mask) > 0 if mask is not None else None)
