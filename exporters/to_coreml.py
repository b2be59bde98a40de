"""PyTorch -> Core ML: ML Program (.mlpackage, fp16, iOS 15+) and NeuralNetwork (.mlmodel, fp32, iOS 14+)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from exporters.contract import INPUT_NAME, OUTPUT_NAME, InputContract
from models.network import ConvNeXtPose

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreMLTarget:
    format: str
    suffix: str
    precision: str
    convert_to: str
    min_target: str  # coremltools.target attribute name


MLPACKAGE = CoreMLTarget("coreml-mlpackage", ".mlpackage", "fp16", "mlprogram", "iOS15")
# iOS 14, not 13: align-corners bilinear upsampling needs NeuralNetwork spec version 5.
MLMODEL = CoreMLTarget("coreml-mlmodel", ".mlmodel", "fp32", "neuralnetwork", "iOS14")


def export_coreml(
    model: ConvNeXtPose, contract: InputContract, path: Path, target: CoreMLTarget, metadata: dict[str, str]
) -> dict:
    import coremltools as ct

    traced = torch.jit.trace(model, torch.zeros(contract.shape_nchw))
    kwargs = {}
    if target.convert_to == "mlprogram":
        kwargs["compute_precision"] = ct.precision.FLOAT16 if target.precision == "fp16" else ct.precision.FLOAT32
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=contract.shape_nchw)],
        outputs=[ct.TensorType(name=OUTPUT_NAME)],
        convert_to=target.convert_to,
        minimum_deployment_target=getattr(ct.target, target.min_target),
        **kwargs,
    )
    mlmodel.author = "convnextpose-export"
    mlmodel.short_description = f"ConvNeXtPose {metadata['variant']} 3D human pose ({target.precision})"
    mlmodel.license = "see the checkpoint's licence"
    mlmodel.input_description[INPUT_NAME] = f"NCHW float32 {list(contract.shape_nchw)}: {contract.describe()}"
    spec = model.spec
    mlmodel.output_description[OUTPUT_NAME] = (
        f"(1, {spec.joints}, 3): x, y in heatmap px ({spec.heatmap_size}x{spec.heatmap_size}), z in depth bins "
        f"({spec.depth_bins}); see metadata 'output' for conversions"
    )
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.save(str(path))
    return {"convert_to": target.convert_to, "minimum_deployment_target": target.min_target}
