"""Synthetic checkpoints in exactly the released file layout, for tests and the default export.

Weights are untrained but shaped like a trained network's statistics: BatchNorm running stats
are measured on smooth random images (not the 0/1 defaults), and the final layer is scaled so
heatmaps are neither uniform nor one-hot. Every file carries a `synthetic` marker.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from common.files import write_atomic
from models.network import ConvNeXtPose
from models.preprocessing import normalise
from models.spec import ModelSpec

log = logging.getLogger(__name__)

SYNTHETIC_EPOCH = 0
_CALIBRATION_BATCHES = 2
_CALIBRATION_BATCH_SIZE = 4
_LOGIT_STD = 2.0  # std of final-layer logits: peaked but not one-hot heatmaps


def smooth_random_images(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) RGB in [0, 1]: low-frequency noise, closer to photos than white noise."""
    coarse = torch.rand(n, 3, size // 16, size // 16, generator=generator, dtype=torch.float64)
    fine = torch.rand(n, 3, size // 4, size // 4, generator=generator, dtype=torch.float64)
    up = lambda t: nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * up(coarse) + 0.2 * up(fine)).clamp(0, 1)


def synthetic_model(spec: ModelSpec, seed: int = 0) -> ConvNeXtPose:
    """Deterministic untrained model with measured BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ConvNeXtPose(spec)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.momentum = None  # cumulative average over the calibration batches
        # One thread: the summation order, and so the file, does not depend on the machine's cores.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model.train()
            for _ in range(_CALIBRATION_BATCHES):
                images = smooth_random_images(_CALIBRATION_BATCH_SIZE, spec.input_size, generator)
                model(normalise(images).float())
            model.eval()
            logits = model.heatmaps(normalise(smooth_random_images(2, spec.input_size, generator)).float())
        finally:
            torch.set_num_threads(threads)
        scale = _LOGIT_STD / float(logits.std())
        model.head.final_layer.weight.mul_(scale)
        model.head.final_layer.bias.mul_(scale)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    return model.eval()


def optimizer_state(model: nn.Module) -> dict:
    """A real AdamW state_dict with moments for every parameter, as the released files have."""
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=0.0)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # lr 0: creates step/exp_avg/exp_avg_sq without changing the weights
    for p in params:
        p.grad = None
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        group["lr"] = 1e-4
    return state


def to_legacy_head_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deconv_layers_N.dwconv|norm|pwconv -> deconv_layers_N.0|1|2, as in the released M and L files."""
    names = {".dwconv.": ".0.", ".norm.": ".1.", ".pwconv.": ".2."}
    out = {}
    for key, value in state.items():
        if ".deconv_layers_" in key:
            for official, index in names.items():
                key = key.replace(official, index)
        out[key] = value
    return out


def save_atomic(payload: dict, out: Path) -> None:
    """torch.save through a temporary name: a checkpoint file is complete or absent. Saved through a
    file object, so the archive's inner folder is "archive" and the bytes do not depend on the name."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)

    write_atomic(Path(out), write)


def write_synthetic_checkpoint(
    spec: ModelSpec, out: str | Path, seed: int = 0, legacy_head_keys: bool = False
) -> Path:
    """Write {'epoch', 'network' (module.-prefixed), 'optimizer', 'synthetic'} atomically."""
    out = Path(out)
    model = synthetic_model(spec, seed)
    network = {f"module.{k}": v for k, v in model.state_dict().items()}
    if legacy_head_keys:
        network = to_legacy_head_keys(network)
    payload = {
        "epoch": SYNTHETIC_EPOCH,
        "network": network,
        "optimizer": optimizer_state(model),
        "synthetic": {
            "kind": "untrained",
            "variant": spec.name,
            "seed": seed,
            "joints": spec.joints,
            "note": "random weights with measured BatchNorm statistics -- NOT a trained pose model",
        },
    }
    save_atomic(payload, out)
    log.info("wrote synthetic UNTRAINED %s checkpoint (seed %d) to %s", spec.name, seed, out)
    return out
