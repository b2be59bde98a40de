"""What a format is: the records the format table (exporters/formats.py) is made of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ArtifactKind:
    """One file an export can write."""

    format: str  # manifest "format"
    precision: str
    suffix: str  # the file is f"{stem}{suffix}", e.g. convnextpose-S_fp16.tflite
    layout: str  # input layout: NCHW or NHWC
    runtime: str  # runtimes key: onnxruntime | litert | coreml
    backend: str  # bench row name
    #: what the file computes in, which decides how it is judged (exporters/gates.py): "fp32" (correct
    #: to the fp32 noise floor), "fp16-weights", "fp16" or "int8" (cost within the budget)
    arithmetic: str

    def file_name(self, stem: str) -> str:
        return f"{stem}{self.suffix}"


@dataclass(frozen=True)
class ExportFormat:
    """One ``--formats`` choice and the stage that builds its artifacts."""

    name: str
    help: str
    artifacts: tuple[ArtifactKind, ...]
    build: Callable[..., None]  # (ExportRun, ExportFormat) -> None: exporters/stages.py
    requires: tuple[str, ...] = ()  # formats whose verified artifacts this one is built from
    default: bool = True  # part of the default --formats
    #: built in a forked process beside the other stages (exporters/side_stage.py), started as soon as the
    #: stages it requires are done
    beside: bool = False
    #: run in the export process before a beside stage forks, for what later stages share with it
    prepare: Callable[..., None] | None = None  # (ExportRun) -> None

    def kind(self, fmt: str, precision: str) -> ArtifactKind:
        for kind in self.artifacts:
            if (kind.format, kind.precision) == (fmt, precision):
                return kind
        raise KeyError(f"format {self.name} has no artifact {fmt} {precision}")
