"""The architecture's own boundaries and what PyTorch computes at each: where a diagnosis compares.

A boundary is a module whose output every faithful conversion must also compute somewhere: the
stem, each downsampling layer, every block, the final norm, each head layer, the heatmap logits
and the soft-argmax output. Names are the module paths of the state dict (``backbone.stages.2.1``
is block 1 of stage 2), so a diagnosis points at the keys a user knows from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.network import ConvNeXtPose
from models.spec import NUM_HEAD_LAYERS

JOINTS = "joints"  # the model output (soft-argmax), not a module of its own


@dataclass(frozen=True)
class Boundary:
    name: str  # module path, e.g. backbone.stages.2.1
    label: str  # short, for tables: s2.b1
    module: nn.Module | None  # None: the model output


def boundaries(model: ConvNeXtPose) -> list[Boundary]:
    """Every boundary of ``model``, in execution order."""
    found = [Boundary("backbone.downsample_layers.0", "stem", model.backbone.downsample_layers[0])]
    for s, stage in enumerate(model.backbone.stages):
        if s:
            found.append(Boundary(f"backbone.downsample_layers.{s}", f"down{s}", model.backbone.downsample_layers[s]))
        found += [Boundary(f"backbone.stages.{s}.{b}", f"s{s}.b{b}", block) for b, block in enumerate(stage)]
    found.append(Boundary("backbone.norm", "norm", model.backbone.norm))
    found += [Boundary(f"head.deconv_layers_{k}", f"head{k}", getattr(model.head, f"deconv_layers_{k}"))
              for k in range(1, NUM_HEAD_LAYERS + 1)]
    found.append(Boundary("head.final_layer", "logits", model.head.final_layer))
    found.append(Boundary(JOINTS, JOINTS, None))
    return found


def torch_boundaries(model: ConvNeXtPose, x: torch.Tensor) -> dict[str, np.ndarray]:
    """PyTorch's output at every boundary for ``x`` (what ``model`` takes), by boundary name, in order."""
    values: dict[str, np.ndarray] = {}
    hooks = []
    found = boundaries(model)
    for b in found:
        if b.module is not None:
            hooks.append(b.module.register_forward_hook(
                lambda _m, _i, out, name=b.name: values.__setitem__(name, out.detach().numpy().copy())))
    try:
        with torch.no_grad():
            values[JOINTS] = model(x).numpy()
    finally:
        for h in hooks:
            h.remove()
    return {b.name: values[b.name] for b in found}
