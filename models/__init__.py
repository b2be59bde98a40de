"""ConvNeXtPose as released: variant registry, network, shape-checked checkpoint loading."""

from models.errors import CheckpointError, CheckpointMismatchError, ConvNeXtPoseError, ExportError
from models.spec import REGISTRY, ModelSpec, spec_for

__all__ = [
    "REGISTRY",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConvNeXtPoseError",
    "ExportError",
    "ModelSpec",
    "spec_for",
]
