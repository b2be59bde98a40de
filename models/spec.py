"""The single source of truth for ConvNeXtPose architecture numbers.

Every other module (network, checkpoint inference, exporters, tests, Makefile) reads these
numbers from here; nothing else repeats them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_STRIDE = 32
STEM_KERNEL = 4
DOWNSAMPLE_KERNEL = 2
BLOCK_KERNEL = 7
HEAD_KERNEL = 3
MLP_RATIO = 4
NUM_HEAD_LAYERS = 3
BBOX_3D_DEPTH_MM = 2000.0  # depth range covered by the D bins, centred on the root joint
DEFAULT_JOINTS = 18


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one ConvNeXtPose network.

    ``num_upsample`` has no weights, so a checkpoint cannot tell it; it comes from the named
    variant or from the rule heatmap H == D that all released variants follow.
    """

    name: str
    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]
    head_channels: int
    num_upsample: int
    depth_bins: int
    joints: int = DEFAULT_JOINTS
    input_size: int = 256
    in_chans: int = 3

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.dims) != 4:
            raise ValueError(f"spec {self.name!r}: depths and dims need 4 stages, got {self.depths}, {self.dims}")
        if not 0 <= self.num_upsample <= NUM_HEAD_LAYERS:
            raise ValueError(f"spec {self.name!r}: num_upsample must be 0..{NUM_HEAD_LAYERS}, got {self.num_upsample}")
        if self.input_size % BACKBONE_STRIDE:
            raise ValueError(f"spec {self.name!r}: input_size must be a multiple of {BACKBONE_STRIDE}")
        if min(*self.depths, *self.dims, self.head_channels, self.joints, self.depth_bins) < 1:
            raise ValueError(f"spec {self.name!r}: sizes must be positive")

    # ---- derived -------------------------------------------------------------------------
    @property
    def heatmap_size(self) -> int:
        """Heatmap H (= W) in pixels."""
        return self.input_size // BACKBONE_STRIDE * 2**self.num_upsample

    @property
    def heatmap_shape(self) -> tuple[int, int, int]:
        """(D, H, W) of each joint's 3D heatmap."""
        return (self.depth_bins, self.heatmap_size, self.heatmap_size)

    @property
    def output_channels(self) -> int:
        return self.joints * self.depth_bins

    @property
    def params(self) -> int:
        return _count(self)[0]

    @property
    def state_dict_elements(self) -> int:
        """Parameters plus BatchNorm buffers (running mean/var, num_batches_tracked)."""
        return _count(self)[1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the convolutions for one input (the paper's GMACs * 1e9)."""
        return _count(self)[2]

    def with_joints(self, joints: int) -> "ModelSpec":
        """Same architecture for another joint set; J*D channels are kept by the caller's choice."""
        return dataclasses.replace(self, joints=joints)

    def same_architecture(self, other: "ModelSpec") -> bool:
        """True when both specs build identical networks (names may differ)."""
        return dataclasses.replace(other, name=self.name) == self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(
            depths=list(self.depths),
            dims=list(self.dims),
            heatmap_shape=list(self.heatmap_shape),
            params=self.params,
            state_dict_elements=self.state_dict_elements,
            macs=self.macs,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        """Inverse of :meth:`to_dict`. The derived figures in ``d`` are checked, not trusted."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(d) - {"joints", "input_size", "in_chans"}
        if missing:
            raise ValueError(f"spec is missing {sorted(missing)}")
        spec = cls(**{k: tuple(v) if k in ("depths", "dims") else v for k, v in d.items() if k in names})
        stale = {k for k, v in spec.to_dict().items() if k in d and d[k] != v}
        if stale:
            raise ValueError(f"spec {spec.name!r}: recorded {sorted(stale)} disagree with its architecture")
        return spec


def _conv(cin: int, cout: int, k: int, groups: int, hw: int) -> tuple[int, int]:
    """(params, MACs) of a Conv2d with bias producing an hw x hw output."""
    weights = cout * (cin // groups) * k * k
    return weights + cout, weights * hw * hw


def _count(spec: ModelSpec) -> tuple[int, int, int]:
    """(params, state_dict elements, conv MACs), walking the architecture once."""
    params = macs = bn_buffers = 0

    def conv(cin: int, cout: int, k: int, hw: int, groups: int = 1) -> None:
        nonlocal params, macs
        p, m = _conv(cin, cout, k, groups, hw)
        params += p
        macs += m

    def batchnorm(c: int) -> None:
        nonlocal params, bn_buffers
        params += 2 * c
        bn_buffers += 2 * c + 1  # running_mean, running_var, num_batches_tracked

    hw = spec.input_size // STEM_KERNEL
    conv(spec.in_chans, spec.dims[0], STEM_KERNEL, hw)
    batchnorm(spec.dims[0])
    for i, (depth, c) in enumerate(zip(spec.depths, spec.dims)):
        if i > 0:
            batchnorm(spec.dims[i - 1])
            hw //= DOWNSAMPLE_KERNEL
            conv(spec.dims[i - 1], c, DOWNSAMPLE_KERNEL, hw)
        for _ in range(depth):
            conv(c, c, BLOCK_KERNEL, hw, groups=c)
            batchnorm(c)
            conv(c, MLP_RATIO * c, 1, hw)
            conv(MLP_RATIO * c, c, 1, hw)
    batchnorm(spec.dims[-1])
    cin = spec.dims[-1]
    for layer in range(NUM_HEAD_LAYERS):
        conv(cin, cin, HEAD_KERNEL, hw, groups=cin)
        batchnorm(cin)
        conv(cin, spec.head_channels, 1, hw)
        if layer < spec.num_upsample:
            hw *= 2
        cin = spec.head_channels
    conv(cin, spec.output_channels, 1, hw)
    return params, params + bn_buffers, macs


_FEMTO_L = dict(depths=(3, 3, 9, 3), dims=(48, 96, 192, 384))

#: The four released variants (paper and released checkpoints; the facts and their sources are in
#: tests/models/released_variants.md, which the tests check this registry against).
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("XS", depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), head_channels=128, num_upsample=2, depth_bins=32),
        ModelSpec("S", **_FEMTO_L, head_channels=256, num_upsample=2, depth_bins=32),
        ModelSpec("M", **_FEMTO_L, head_channels=256, num_upsample=3, depth_bins=64),
        ModelSpec("L", **_FEMTO_L, head_channels=512, num_upsample=3, depth_bins=64),
    )
}


def spec_for(name: str, joints: int = DEFAULT_JOINTS) -> ModelSpec:
    """The registered spec for a variant name (case-insensitive), for ``joints`` joints."""
    key = name.upper()
    if key not in REGISTRY:
        raise KeyError(f"unknown variant {name!r}; registered: {', '.join(REGISTRY)}")
    spec = REGISTRY[key]
    return spec if joints == spec.joints else spec.with_joints(joints)


def upsample_count_by_rule(depth_bins: int, input_size: int = 256) -> int | None:
    """Upsampling layers that make heatmap H equal D (the rule every released variant follows)."""
    base = input_size // BACKBONE_STRIDE
    for n in range(NUM_HEAD_LAYERS + 1):
        if base * 2**n == depth_bins:
            return n
    return None
