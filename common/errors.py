"""One exception family. The CLI turns any of these into a one-paragraph message and exit code 2."""


class ConvNeXtPoseError(Exception):
    """A user-facing error: the message names the file, tensor, shape or stage at fault."""


class CheckpointError(ConvNeXtPoseError):
    """A checkpoint file could not be read or is not a usable ConvNeXtPose checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not fit the requested architecture."""


class ExportError(ConvNeXtPoseError):
    """An export stage failed (conversion or verification); names the stage."""


class ManifestError(ConvNeXtPoseError):
    """A folder is not a usable export: no manifest, an unreadable one, or another schema version."""


class RuntimeUnavailableError(ConvNeXtPoseError):
    """The runtime an artifact needs is not installed or cannot run here; names it."""
