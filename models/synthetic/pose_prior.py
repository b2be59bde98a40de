"""A plausible random 3D human pose in the Human3.6M 18-joint order, and its camera projection.

Kinematic chain with bone lengths in mm and joint angles drawn inside human limits; no data
download. Body frame: X = the person's left, Y = up, Z = the way the person faces; pelvis at 0.
Besides the 18 joints it returns a few extra surface points (feet, hands, head centre) that
the renderer needs to draw a figure whose shape tells which way it faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.joints import HUMAN36M

J = len(HUMAN36M.names)
_IDX = {name: i for i, name in enumerate(HUMAN36M.names)}
EXTRA_POINTS = ("L_Foot", "R_Foot", "L_Hand", "R_Hand", "Head_Centre")

# Adult proportions in mm; the whole set is scaled per sample, each bone jittered a little.
_BONES = dict(hip_w=115.0, hip_drop=40.0, thigh=440.0, shin=430.0, spine1=230.0, spine2=250.0,
              shoulder_w=165.0, shoulder_drop=25.0, upper_arm=285.0, forearm=255.0)
HEAD_RADIUS_MM = 105.0


@dataclass(frozen=True)
class Pose3D:
    """Joints (J, 3) and extra points (len(EXTRA_POINTS), 3) in camera mm: x right, y down, z away."""

    joints: np.ndarray
    extra: np.ndarray


@dataclass(frozen=True)
class Projection:
    """Where a camera-frame pose lands in a square crop of ``size`` px."""

    joints_px: np.ndarray  # (J, 2) x, y in crop pixels
    extra_px: np.ndarray  # (E, 2)
    px_per_mm: np.ndarray  # (J + E,) image scale at each point's depth (perspective)
    depth_mm: np.ndarray  # (J,) z relative to the root joint (Pelvis)
    extra_depth_mm: np.ndarray  # (E,) relative to the root joint


def _rot(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def rx(d: float) -> np.ndarray:
    return _rot(0, d)


def ry(d: float) -> np.ndarray:
    return _rot(1, d)


def rz(d: float) -> np.ndarray:
    return _rot(2, d)


def _clipped_normal(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, std), lo, hi))


def sample_body_pose(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(joints (J, 3), extra points (E, 3)) in the body frame, mm."""
    scale = rng.uniform(0.85, 1.15)
    b = {k: v * scale * rng.uniform(0.93, 1.07) for k, v in _BONES.items()}
    p = np.zeros((J, 3))
    extra = np.zeros((len(EXTRA_POINTS), 3))
    down = np.array([0.0, -1.0, 0.0])
    up = -down

    # Spine: forward bend (+ rx moves up toward +Z), twist, side bend -- split over two segments.
    bend, twist, side = _clipped_normal(rng, 8, 18, -25, 70), rng.uniform(-35, 35), _clipped_normal(rng, 0, 10, -30, 30)
    r_pelvis = rx(_clipped_normal(rng, 0, 8, -20, 30))
    r_lower = r_pelvis @ rx(bend / 2) @ ry(twist / 2) @ rz(side / 2)
    r_upper = r_lower @ rx(bend / 2) @ ry(twist / 2) @ rz(side / 2)
    p[_IDX["Torso"]] = r_lower @ up * b["spine1"]
    p[_IDX["Neck"]] = p[_IDX["Torso"]] + r_upper @ up * b["spine2"]

    # Head: yaw, pitch, roll about the neck. Nose in front; head joint = top of the head.
    r_head = r_upper @ ry(rng.uniform(-60, 60)) @ rx(_clipped_normal(rng, 0, 15, -35, 40)) @ rz(rng.uniform(-20, 20))
    neck = p[_IDX["Neck"]]
    p[_IDX["Nose"]] = neck + r_head @ np.array([0.0, 100.0, 100.0]) * scale
    p[_IDX["Head"]] = neck + r_head @ np.array([0.0, 205.0, 20.0]) * scale
    extra[4] = neck + r_head @ np.array([0.0, 125.0, 15.0]) * scale  # head top stays inside the head disc

    for side_name, s in (("L", 1.0), ("R", -1.0)):
        # Leg: flexion forward (rx(-a) swings -Y toward +Z), abduction outward, twist sets the knee plane.
        hip = r_pelvis @ np.array([s * b["hip_w"], -b["hip_drop"], 0.0])
        flex = _clipped_normal(rng, 10, 35, -30, 110)
        knee_flex = float(np.clip(abs(rng.normal(0, 45)) + max(flex, 0) * 0.4, 0, 140))
        r_thigh = r_pelvis @ rx(-flex) @ rz(s * _clipped_normal(rng, 5, 15, -10, 50)) @ ry(s * rng.uniform(-30, 30))
        knee = hip + r_thigh @ down * b["thigh"]
        r_shin = r_thigh @ rx(knee_flex)  # knee bends the shin backward
        ankle = knee + r_shin @ down * b["shin"]
        p[_IDX[f"{side_name}_Hip"]], p[_IDX[f"{side_name}_Knee"]], p[_IDX[f"{side_name}_Ankle"]] = hip, knee, ankle
        extra[0 if s > 0 else 1] = ankle + r_shin @ np.array([0.0, -40.0, 150.0]) * scale  # toes point forward

        # Arm: abduction sideways, flexion forward/up, humeral rotation, elbow bends forward. Angles
        # are most often small (arms near the body, as in everyday poses) but reach overhead.
        shoulder = neck + r_upper @ np.array([s * b["shoulder_w"], -b["shoulder_drop"], 0.0])
        abduction = float(np.clip(abs(rng.normal(15, 45)), 0, 160))
        r_arm = r_upper @ rz(s * abduction) @ rx(-_clipped_normal(rng, 15, 45, -40, 160)) @ ry(s * rng.uniform(-45, 45))
        elbow = shoulder + r_arm @ down * b["upper_arm"]
        r_forearm = r_arm @ rx(-float(np.clip(abs(rng.normal(20, 55)), 0, 145)))
        wrist = elbow + r_forearm @ down * b["forearm"]
        p[_IDX[f"{side_name}_Shoulder"]], p[_IDX[f"{side_name}_Elbow"]], p[_IDX[f"{side_name}_Wrist"]] = (
            shoulder, elbow, wrist)
        extra[2 if s > 0 else 3] = wrist + r_forearm @ down * 75.0 * scale  # hand centre beyond the wrist

    p[_IDX["Thorax"]] = (p[_IDX["L_Shoulder"]] + p[_IDX["R_Shoulder"]]) / 2  # as Human3.6M's added joint
    return p, extra


def sample_camera_pose(rng: np.random.Generator, yaw_range: float = 100.0) -> Pose3D:
    """A random body pose seen from a random direction, in camera mm (pelvis 2.5-6 m away).

    Yaw within +-``yaw_range`` degrees of facing the camera (180: all around). Back views make
    left/right a matter of subtle cues that a network trained for minutes cannot learn; its
    heatmaps would then split between the two limbs.
    """
    body, extra = sample_body_pose(rng)
    r_global = rz(rng.uniform(-15, 15)) @ rx(rng.uniform(-20, 20)) @ ry(rng.uniform(-yaw_range, yaw_range))
    to_camera = np.diag([1.0, -1.0, -1.0])  # body (left, up, facing) -> camera (right, down, away)
    shift = np.array([rng.uniform(-300, 300), rng.uniform(-300, 300), rng.uniform(2500, 6000)])
    rot = to_camera @ r_global
    return Pose3D(joints=body @ rot.T + shift, extra=extra @ rot.T + shift)


def project_into_crop(
    pose: Pose3D,
    size: int,
    rng: np.random.Generator,
    reach: float | None = None,
    fill: tuple[float, float] = (0.75, 0.95),
    jitter: float = 0.03,
    margin: float = 0.05,
) -> Projection:
    """Perspective projection, then scale/shift as ConvNeXtPose's bounding-box crop does.

    The figure's box is centred in the usable span (+- ``jitter`` * size) and its longer side fills
    ``fill`` of it, like the released pre-processing (box centre -> crop centre, longer side
    x 1.25 -> the crop). Joints land in [margin*size, reach - margin*size]; ``reach`` (default
    size - 1) is the largest coordinate the network can output: (W - 1) * size / W for a W-pixel
    heatmap, since x_hm = x_px * W / size. Size in px does not tell distance; depth stays in mm
    relative to the root.
    """
    reach = size - 1 if reach is None else reach
    low, span = margin * size, reach - 2 * margin * size
    pts = np.concatenate([pose.joints, pose.extra])
    uv = pts[:, :2] / pts[:, 2:3]  # focal length 1; the crop scale below absorbs it
    head = len(pose.joints) + EXTRA_POINTS.index("Head_Centre")
    head_r = HEAD_RADIUS_MM / pts[head, 2]
    lo = np.minimum(uv.min(0), uv[head] - head_r)
    hi = np.maximum(uv.max(0), uv[head] + head_r)
    extent = float((hi - lo).max())
    scale = span * rng.uniform(*fill) / extent
    box = (hi - lo) * scale
    shift = rng.uniform(-1, 1, 2) * np.minimum(jitter * size, np.maximum(span - box, 0) / 2)
    offset = low + (span - box) / 2 + shift - lo * scale
    px = uv * scale + offset
    z_rel = pts[:, 2] - pose.joints[HUMAN36M.root, 2]
    n = len(pose.joints)
    return Projection(
        joints_px=px[:n], extra_px=px[n:], px_per_mm=scale / pts[:, 2], depth_mm=z_rel[:n], extra_depth_mm=z_rel[n:]
    )
