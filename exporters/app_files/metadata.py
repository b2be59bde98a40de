"""What every exported file carries about itself: the manifest's essentials as string pairs (ONNX, TFLite,
Core ML metadata), the licence line, and the standard TFLite metadata an Android app reads."""

from __future__ import annotations

import json

from exporters.app_files.tflite_metadata import LABELS_FILE, TfliteMetadata
from models.checkpoint import LoadedCheckpoint
from models.contract import InputContract, output_description
from models.joints import joint_set_for
from runtimes.versions import version_of


def embedded_metadata(loaded: LoadedCheckpoint, contract: InputContract) -> dict[str, str]:
    """The manifest's essentials, as string pairs every format can carry (ONNX, TFLite, CoreML)."""
    spec = loaded.spec
    joints = joint_set_for(spec.joints)
    return {
        "model": "ConvNeXtPose",
        "variant": loaded.matched_variant or "custom",
        "checkpoint_sha256": loaded.sha256,
        "synthetic_weights": json.dumps(loaded.synthetic) if loaded.synthetic else "no",
        "input": json.dumps(contract.to_dict()),
        "output": json.dumps(output_description(spec)),
        "joint_names": json.dumps(list(joints.names)),
        "skeleton": json.dumps([list(e) for e in joints.skeleton]),
    }


PROJECT = "convnextpose-export"
CODE_LICENSE = "MIT"


def weights_license(loaded: LoadedCheckpoint) -> str:
    if loaded.synthetic:
        return f"code and weights: {CODE_LICENSE} (the weights were made by {PROJECT})"
    return f"code: {CODE_LICENSE}; weights: the licence of the checkpoint they came from"


def app_metadata(loaded: LoadedCheckpoint, contract: InputContract) -> TfliteMetadata:
    """The standard TFLite metadata of every .tflite of this export (exporters/app_files/tflite_metadata.py)."""
    spec, s = loaded.spec, contract.shape_nchw[-1]
    folded = contract.normalization_folded
    mean = (0.0, 0.0, 0.0) if folded else tuple(round(255 * m, 4) for m in contract.mean)
    std = (255.0, 255.0, 255.0) if folded else tuple(round(255 * d, 4) for d in contract.std)
    out = output_description(spec)
    return TfliteMetadata(
        name=f"ConvNeXtPose {loaded.matched_variant or 'custom'}",
        description=("Single-person 3D human pose from a square person crop: soft-argmax joints. "
                     + ("Weights trained on synthetic figures only (NOT a model of real people). "
                        if loaded.trained_synthetic else "Untrained weights (NOT a pose model). "
                        if loaded.synthetic else "")
                     + f"Checkpoint sha256 {loaded.sha256}."),
        version=f"{PROJECT} {version_of(PROJECT)}",
        author=PROJECT,
        licenses=weights_license(loaded),
        input_description=(f"RGB image {s}x{s}, float32: a square crop around one person, resized; "
                           f"{contract.describe()}"),
        norm_mean=mean,
        norm_std=std,
        output_description=(f"joints (1, {spec.joints}, 3), float32, in the order of {LABELS_FILE}: {out['units']}. "
                            f"{out['to_input_pixels']}; {out['to_original_image']}; {out['to_depth_mm']}"),
        joint_names=tuple(joint_set_for(spec.joints).names),
    )
