"""ConvNeXtPose as released: variant registry, network, shape-checked checkpoint loading.

Subpackages: ``models.synthetic`` (the download-free synthetic pose task and untrained
checkpoints in the released layout) and ``models.training`` (CPU training of reference weights).
"""

from models.spec import REGISTRY, ModelSpec, spec_for

__all__ = ["REGISTRY", "ModelSpec", "spec_for"]
