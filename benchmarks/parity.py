"""Output parity of a backend against the PyTorch fp32 reference, in task units."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.spec import BBOX_3D_DEPTH_MM

PCK_THRESHOLDS_PX = (0.5, 1.0)


@dataclass(frozen=True)
class ParityStats:
    """2-D joint error = Euclidean distance of (x, y) in heatmap px; depth error = |dz| in mm."""

    n_inputs: int
    mean_px: float
    p99_px: float
    max_px: float
    max_input_px: float
    mean_depth_mm: float
    max_depth_mm: float
    pck_05: float  # share of joints within 0.5 heatmap px of the reference
    pck_10: float
    per_joint_mean_px: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_joint_mean_px"] = list(self.per_joint_mean_px)
        return d


def parity_stats(candidate: np.ndarray, reference: np.ndarray, input_size: int, heatmap_size: int,
                 depth_bins: int) -> ParityStats:
    if candidate.shape != reference.shape:
        raise ValueError(f"output shape {candidate.shape} differs from the reference {reference.shape}")
    delta = candidate.astype(np.float64) - reference.astype(np.float64)
    err2d = np.linalg.norm(delta[..., :2], axis=-1)  # (N, J)
    depth_mm = np.abs(delta[..., 2]) * BBOX_3D_DEPTH_MM / depth_bins
    return ParityStats(
        n_inputs=int(reference.shape[0]),
        mean_px=float(err2d.mean()),
        p99_px=float(np.percentile(err2d, 99)),
        max_px=float(err2d.max()),
        max_input_px=float(err2d.max() * input_size / heatmap_size),
        mean_depth_mm=float(depth_mm.mean()),
        max_depth_mm=float(depth_mm.max()),
        pck_05=float((err2d <= PCK_THRESHOLDS_PX[0]).mean()),
        pck_10=float((err2d <= PCK_THRESHOLDS_PX[1]).mean()),
        per_joint_mean_px=tuple(float(v) for v in err2d.mean(axis=0)),
    )


def check_artifacts(out_dir, images_dir=None, seed: int = 0, threads: int = 2) -> list[dict]:
    """Re-run every artifact this OS can run and judge it with the one tolerance table.

    The CI parity suite: numbers come from running the files, never from the manifest's word.
    """
    import json
    from pathlib import Path

    from benchmarks.run import load_manifest_checkpoint
    from exporters.contract import normalise
    from exporters.images import inputs_for
    from exporters.runtimes import coreml_runner, run_onnx, run_tflite
    from exporters.calibration import judged_mask_for
    from exporters.verify import check, reference_joints

    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    loaded = load_manifest_checkpoint(manifest)
    inputs = inputs_for(loaded, images_dir, seed)
    reference = reference_joints(loaded, inputs.images)
    fed = inputs.images if manifest["input"]["normalization_folded"] else normalise(inputs.images)
    evaluate_coreml, evaluated_by = coreml_runner()
    runners = {"onnx": run_onnx, "onnx-simplified": run_onnx, "tflite": run_tflite,
               "coreml-mlmodel": evaluate_coreml, "coreml-mlpackage": evaluate_coreml}
    checks = []
    for art in manifest["artifacts"]:
        run = runners[art["format"]]
        joints = run(out_dir / art["file"], fed) if run is evaluate_coreml else run(out_dir / art["file"], fed, threads)
        report = check(joints, reference, loaded.spec, art["format"], art["precision"],
                       judged_mask_for(manifest, inputs, art["precision"]))
        by = {"evaluated_by": evaluated_by} if run is evaluate_coreml else {}
        checks.append({"file": art["file"], **report.to_dict(), **by})
    return checks
