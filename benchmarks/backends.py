"""Backends a benchmark can run: the PyTorch reference plus one per artifact in the manifest.

Artifacts are opened through ``runtimes.open_session`` with the runtime the manifest says verified
them, so the bench times exactly what the export verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.formats import find_kind
from judging.manifest import Manifest
from runtimes import Session, open_session


@dataclass(frozen=True)
class Backend:
    name: str  # unique row name, e.g. "tflite-fp16"
    format: str  # manifest format, or "pytorch"
    precision: str
    artifact: str | None  # file in the output folder; None for PyTorch
    layout: str  # NCHW or NHWC
    bytes: int = 0
    runtime: str = "pytorch"  # runtimes key (the one that verified the artifact)


PYTORCH = Backend("pytorch", "pytorch", "fp32", None, "NCHW")


def backends_from_manifest(manifest: Manifest) -> list[Backend]:
    rows = [PYTORCH]
    for art in manifest.artifacts:
        kind = find_kind(art.format, art.precision)
        name = kind.backend if kind else f"{art.format}-{art.precision}"
        rows.append(Backend(name, art.format, art.precision, art.file, art.layout, art.bytes, art.runtime))
    return rows


def open_backend(backend: Backend, out_dir: Path, threads: int, manifest: Manifest) -> Session:
    if backend.format == "pytorch":
        return _open_pytorch(manifest, threads)
    return open_session(backend.runtime, Path(out_dir) / backend.artifact, threads, backend.layout)


def _open_pytorch(manifest: Manifest, threads: int) -> Session:
    """Eager PyTorch on the same input contract as the artifacts (normalisation folded or not)."""
    import torch

    from models.folding import fold_normalization

    torch.set_num_threads(threads)
    model = manifest.load_checkpoint().build_model()
    if manifest.normalization_folded:
        model = fold_normalization(model)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return Session(predict, f"torch {torch.__version__} eager")
