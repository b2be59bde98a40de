"""How well a model localises joints on fresh synthetic images, and a picture of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.network import ConvNeXtPose
from models.preprocessing import normalise
from models.synthetic.task import DEFAULT_TASK, EVAL, TaskConfig, draw_skeletons, render_batch, render_sample


@dataclass(frozen=True)
class EvalReport:
    """Figures from fp32 inference on images of the evaluation split (never used in training)."""

    n: int
    seed: int
    mean_px: float  # mean 2D joint error, heatmap px
    p99_px: float  # 99th percentile of the per-joint 2D error, heatmap px
    median_max_prob: float  # median over joints of the largest voxel probability (1 = one-hot)
    median_xy_max_prob: float  # the same for the xy marginal (depth summed out): depth is far less certain
    median_peak_mass: float  # median share of the xy marginal within 2 px of its peak: ~1 = unimodal
    mean_depth_bins: float  # mean |z error|, depth bins

PEAK_RADIUS_PX = 2.0


@torch.no_grad()
def heatmap_shape_stats(model: ConvNeXtPose, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per joint (N, J): max voxel probability, max of the xy marginal, xy mass within PEAK_RADIUS_PX of its peak."""
    d, h, w = model.spec.heatmap_shape
    probs = torch.softmax(model.heatmaps(normalise(images)).reshape(len(images), model.spec.joints, -1), dim=2)
    xy = probs.reshape(*probs.shape[:2], d, h * w).sum(2)
    peak = xy.argmax(2)
    ys, xs = torch.div(peak, w, rounding_mode="floor"), peak % w
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    near = ((gy.flatten() - ys[..., None]) ** 2 + (gx.flatten() - xs[..., None]) ** 2) <= PEAK_RADIUS_PX**2
    return probs.amax(2), xy.amax(2), (xy * near).sum(2)


@torch.no_grad()
def predict(model: ConvNeXtPose, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(joints (N, J, 3) in output units, per-joint max voxel probability (N, J)) for [0, 1] images."""
    logits = model.heatmaps(normalise(images))
    probs = torch.softmax(logits.reshape(len(images), model.spec.joints, -1), dim=2)
    return model.soft_argmax(logits), probs.amax(dim=2)


def evaluate_synthetic(
    model: ConvNeXtPose, n: int = 200, seed: int = 0, batch_size: int = 20, task: TaskConfig = DEFAULT_TASK
) -> EvalReport:
    """Errors on ``n`` fresh images: the evaluation split of ``seed``, disjoint from every training image."""
    model.eval()
    errors, depth_errors, shape = [], [], []
    for start in range(0, n, batch_size):
        batch = render_batch(model.spec, seed, start, min(batch_size, n - start), EVAL, task)
        joints, _ = predict(model, batch.images)
        diff = joints - batch.targets
        errors.append(diff[..., :2].norm(dim=-1).flatten())
        depth_errors.append(diff[..., 2].abs().flatten())
        shape.append(torch.stack([s.flatten() for s in heatmap_shape_stats(model, batch.images)]))
    err = torch.cat(errors)
    max_prob, xy_max, peak_mass = torch.cat(shape, dim=1).median(dim=1).values.tolist()
    return EvalReport(
        n=n, seed=seed, mean_px=float(err.mean()), p99_px=float(torch.quantile(err, 0.99)),
        median_max_prob=max_prob, median_xy_max_prob=xy_max, median_peak_mass=peak_mass,
        mean_depth_bins=float(torch.cat(depth_errors).mean()),
    )


def save_sample_png(
    model: ConvNeXtPose, out: str | Path, seed: int = 0, count: int = 4, task: TaskConfig = DEFAULT_TASK
) -> Path:
    """The first ``count`` evaluation-split images (not picked), ground truth green, prediction red, in a row."""
    spec = model.spec
    tiles = []
    for index in range(count):
        sample = render_sample(seed, index, spec.input_size, EVAL, spec.heatmap_size, task)
        images = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float().div(255)
        joints, _ = predict(model.eval(), images)
        pred_px = joints[0, :, :2].numpy() * spec.input_size / spec.heatmap_size
        tiles.append(np.asarray(draw_skeletons(sample.image, {(0, 255, 0): sample.joints_px, (255, 0, 0): pred_px})))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(out)
    return out
