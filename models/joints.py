"""Joint sets: names in output order, skeleton edges, left/right flip pairs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JointSet:
    name: str
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    root: int

    def to_dict(self) -> dict:
        return {
            "set": self.name,
            "names": list(self.names),
            "skeleton": [list(e) for e in self.skeleton],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "root": self.root,
        }


HUMAN36M = JointSet(
    name="Human3.6M",
    names=(
        "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck",
        "Nose", "Head", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist", "Thorax",
    ),
    skeleton=(
        (0, 7), (7, 8), (8, 9), (9, 10), (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
        (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6),
    ),
    flip_pairs=((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13)),
    root=0,
)

MUCO = JointSet(
    name="MuCo",
    names=(
        "Head_top", "Thorax", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
        "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Pelvis", "Spine", "Head",
        "R_Hand", "L_Hand", "R_Toe", "L_Toe",
    ),
    # As in the official ConvNeXtPose / 3DMPPE demo code.
    skeleton=(
        (0, 16), (16, 1), (1, 15), (15, 14), (14, 8), (14, 11), (8, 9), (9, 10), (10, 19), (11, 12),
        (12, 13), (13, 20), (1, 2), (2, 3), (3, 4), (4, 17), (1, 5), (5, 6), (6, 7), (7, 18),
    ),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (17, 18), (19, 20)),
    root=14,
)


def joint_set_for(num_joints: int) -> JointSet:
    """The known joint set with this many joints, or generic names for a custom head."""
    for known in (HUMAN36M, MUCO):
        if len(known.names) == num_joints:
            return known
    return JointSet(
        name=f"custom-{num_joints}",
        names=tuple(f"joint_{i}" for i in range(num_joints)),
        skeleton=(),
        flip_pairs=(),
        root=0,
    )
