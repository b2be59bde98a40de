"""ConvNeXtPose network with module and parameter names identical to the official code.

Official code: medialab-ku/ConvNeXtPose (common/nets/convnext_bn.py, main/model.py). Names
must match so released checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from models.spec import (
    BLOCK_KERNEL,
    DOWNSAMPLE_KERNEL,
    HEAD_KERNEL,
    MLP_RATIO,
    NUM_HEAD_LAYERS,
    STEM_KERNEL,
    ModelSpec,
)


class Block(nn.Module):
    """ConvNeXt block with BatchNorm and ReLU (no LayerNorm, GELU, layer-scale or GRN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, BLOCK_KERNEL, padding=BLOCK_KERNEL // 2, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, MLP_RATIO * dim, 1)
        self.act = nn.ReLU()
        self.pwconv2 = nn.Conv2d(MLP_RATIO * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


class ConvNeXtBN(nn.Module):
    """Backbone `ConvNeXt_BN`: stem, 3 downsampling layers, 4 stages, final BatchNorm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        dims = spec.dims
        stem = nn.Sequential(
            nn.Conv2d(spec.in_chans, dims[0], STEM_KERNEL, stride=STEM_KERNEL), nn.BatchNorm2d(dims[0])
        )
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(1, 4):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.BatchNorm2d(dims[i - 1]),
                    nn.Conv2d(dims[i - 1], dims[i], DOWNSAMPLE_KERNEL, stride=DOWNSAMPLE_KERNEL),
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(Block(dim) for _ in range(depth))) for depth, dim in zip(spec.depths, dims)
        )
        self.norm = nn.BatchNorm2d(dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.norm(x)


class DeConv(nn.Module):
    """Head layer: depthwise 3x3, BatchNorm, pointwise, ReLU, then x2 bilinear (align_corners) or identity."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(in_channels, in_channels, HEAD_KERNEL, padding=HEAD_KERNEL // 2, groups=in_channels)
        self.norm = nn.BatchNorm2d(in_channels)
        self.pwconv = nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.ReLU()
        # UpsamplingBilinear2d is bilinear with align_corners=True, as released.
        self.upsample = nn.UpsamplingBilinear2d(scale_factor=2) if upsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.act(self.pwconv(self.norm(self.dwconv(x)))))


class HeadNet(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        in_channels = spec.dims[-1]
        for k in range(1, NUM_HEAD_LAYERS + 1):
            layer = DeConv(in_channels, spec.head_channels, upsample=k <= spec.num_upsample)
            self.add_module(f"deconv_layers_{k}", layer)
            in_channels = spec.head_channels
        self.final_layer = nn.Conv2d(in_channels, spec.output_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(1, NUM_HEAD_LAYERS + 1):
            x = getattr(self, f"deconv_layers_{k}")(x)
        return self.final_layer(x)


class SoftArgmax3D(nn.Module):
    """Expected (x, y, z) of each joint's softmax-normalised 3D heatmap.

    Written as softmax + one matmul with a constant (D*H*W, 3) table of voxel coordinates: the
    same sums as the official code, but without run-time ``torch.arange`` or 5-D reductions, so
    every converter sees Reshape -> Softmax -> MatMul.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.joints = spec.joints
        d, h, w = spec.heatmap_shape
        z, y, x = torch.meshgrid(
            torch.arange(d, dtype=torch.float32),
            torch.arange(h, dtype=torch.float32),
            torch.arange(w, dtype=torch.float32),
            indexing="ij",
        )
        # Not persistent: released checkpoints do not contain it.
        self.register_buffer("coords", torch.stack([x, y, z], dim=-1).reshape(d * h * w, 3), persistent=False)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(heatmaps.reshape(-1, self.joints, self.coords.shape[0]), dim=2)
        return torch.matmul(probs, self.coords)


class ConvNeXtPose(nn.Module):
    """RGB crop (N, 3, S, S), ImageNet-normalised -> joints (N, J, 3): x, y in heatmap px, z in depth bins."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ConvNeXtBN(spec)
        self.head = HeadNet(spec)
        self.soft_argmax = SoftArgmax3D(spec)

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, J*D, H, W)."""
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft_argmax(self.heatmaps(x))


def build_model(spec: ModelSpec) -> ConvNeXtPose:
    return ConvNeXtPose(spec).eval()


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape for ``spec``. Built on the CPU (0.05 s for S, 0.07 s for L): the meta device
    would not allocate the weights, but its first use in a process costs 1.4 s (measured)."""
    model = ConvNeXtPose(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
