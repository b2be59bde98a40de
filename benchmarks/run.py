"""`convnextpose bench`: every backend in its own process, parity against PyTorch, reports in OUT."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.arm64 import BENCH_ARM64_JSON
from benchmarks.backends import Backend, backends_from_manifest
from benchmarks.latency import LatencySettings
from benchmarks.report import BENCH_JSON, write_reports
from benchmarks.significance import PEER, p99_difference
from benchmarks.worker import WorkerJob
from common.errors import ConvNeXtPoseError
from common.files import write_json_atomic
from common.machine import cpu_name
from exporters.app_files import model_card
from judging.gates import judge
from judging.inputs import recorded_inputs
from judging.judged_rows import CALIBRATED, judged_mask_for
from judging.manifest import Manifest, tool_versions
from judging.parity import parity_stats
from judging.readiness import summary as readiness_summary
from judging.references import References
from judging.verify import budgets_of, judge_artifact
from models.preprocessing import normalise
from models.spec import ModelSpec
from runtimes import RUNTIME_PACKAGES
from runtimes.versions import version_of

log = logging.getLogger(__name__)

BASELINE_ORDER = ("onnxruntime-simplified", "onnxruntime")  # latency ratios are relative to the first present


@dataclass(frozen=True)
class BenchOptions:
    out_dir: Path
    threads: int = 2
    images_dir: Path | None = None
    repeats: int = 1
    settings: LatencySettings = field(default_factory=LatencySettings)
    only: tuple[str, ...] = ()  # backend names; empty = all
    synthetic_n: int = 100  # synthetic-task images for weights trained on that task (the export used 10)


def machine_info(threads: int) -> dict:
    return {"cpu": cpu_name(), "logical_cores": os.cpu_count(), "threads": threads, "os": platform.platform()}


def _run_worker(job: WorkerJob, work: Path) -> dict:
    job_file = work / f"{job.backend.name}.job.json"
    job_file.write_text(job.to_json())
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(job.threads)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(job_file)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0 or not Path(job.result_json).exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"status": "failed", "reason": f"worker exited with {proc.returncode}: {tail}"}
    return json.loads(Path(job.result_json).read_text())


def _gemm_roofline(threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.roofline", str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"gemm_gflops": None, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout)


def _row_status(result: dict, verdict: dict | None) -> str:
    """passed: the verdict publishes it (and latency was measured, unless only parity can be here)."""
    if result["status"] == "failed" or verdict is None or verdict["status"] != "published":
        return "failed"
    return "passed" if result["status"] == "measured" else "parity only"


def _runtime_skew(manifest: Manifest, backends: list[Backend]) -> dict[str, str]:
    """Backends whose runtime package is not the version that verified them: their rows fail, since a
    time measured on another runtime build says nothing about the verified file."""
    skew = {}
    for b in backends:
        package = RUNTIME_PACKAGES.get(b.runtime)
        if package and manifest.versions.get(package) not in (None, version_of(package)):
            skew[b.name] = (f"verified with {package} {manifest.versions[package]}, this machine has "
                            f"{version_of(package)}: re-export before benchmarking")
    return skew


def _compare_with_peer(rows: list[dict], peer: str, outputs: dict[str, np.ndarray], judged: np.ndarray,
                       reference: np.ndarray, spec: ModelSpec) -> None:
    """Each other integer row's p99 minus the peer's (ONNX Runtime int8) on the peer's judged inputs, with
    its interval (benchmarks/significance.py): ``p99_vs_onnx_int8``."""
    for entry in rows:
        if entry["backend"] != peer and entry["backend"] in outputs:
            entry["p99_vs_onnx_int8"] = p99_difference(outputs[entry["backend"]][judged], outputs[peer][judged],
                                                       reference[judged], spec).to_dict()


def run_bench(options: BenchOptions) -> dict:
    out_dir = Path(options.out_dir)
    manifest = Manifest.read(out_dir)
    spec = manifest.spec
    backends = backends_from_manifest(manifest)
    if options.only:
        unknown = set(options.only) - {b.name for b in backends}
        if unknown:
            raise ConvNeXtPoseError(f"unknown backend(s) {sorted(unknown)}; available: {[b.name for b in backends]}")
        backends = [b for b in backends if b.name in options.only]

    manifest.refuse_tampered(out_dir, {b.artifact for b in backends if b.artifact})  # time only verified files
    loaded = manifest.load_checkpoint()
    # the export's own verification set, checked before anything is timed (more synthetic images: a
    # p99 over 18 x 100 joints means something)
    inputs = recorded_inputs(loaded, manifest.verification, options.images_dir, options.synthetic_n)
    groups = inputs.group_masks()
    refs = References.of(loaded, inputs.images)
    skew = _runtime_skew(manifest, backends)
    contract_inputs = inputs.images if manifest.normalization_folded else normalise(inputs.images)

    results: dict[str, dict] = {b.name: {"repeats_p50_ms": []} for b in backends}
    integer_outputs: dict[str, np.ndarray] = {}  # joints of the integer rows, for the comparison with the peer
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        np.save(work / "inputs.npy", contract_inputs.astype(np.float32))
        jobs = [(r, b) for r in range(options.repeats) for b in backends]  # rounds interleave backends
        for repeat, backend in tqdm(jobs, desc="bench", unit="backend", disable=None):
            if repeat and "latency" not in results[backend.name]:
                continue  # nothing to time here (Core ML off macOS, a failed worker): its parity is done once
            job = WorkerJob(backend, str(out_dir), options.threads, str(work / "inputs.npy"),
                            str(work / f"{backend.name}.npy") if repeat == 0 else None,
                            str(work / f"{backend.name}.{repeat}.json"),
                            options.settings)
            result = _run_worker(job, work)
            row = results[backend.name]
            if result.get("latency"):
                row["repeats_p50_ms"].append(result["latency"]["p50_ms"])
                log.info("%-24s p50 %.2f ms (%s)", backend.name, result["latency"]["p50_ms"], result["runtime"])
            else:
                log.info("%-24s %s: %s", backend.name, result["status"], result["reason"])
            if repeat == 0:
                row.update(result)
                outputs_file = work / f"{backend.name}.npy"
                if outputs_file.exists():
                    outputs = np.load(outputs_file)
                    judged = judged_mask_for(manifest, inputs, backend.precision)
                    artifact = next((a for a in manifest.artifacts if a.file == backend.artifact), None)
                    verdict = (judge_artifact(manifest, artifact, outputs, refs, inputs) if artifact else
                               judge(outputs, "fp32", refs, judged, budgets_of(manifest)))
                    row["verdict"] = verdict.to_dict()
                    if backend.precision in CALIBRATED:  # the headline figures: inputs disjoint from calibration
                        row["parity_int8_judged"] = verdict.cost.to_dict()
                    if backend.precision.startswith("int8"):
                        integer_outputs[backend.name] = outputs
                    for group, mask in groups.items():
                        row[f"parity_{group}"] = parity_stats(outputs[mask], refs.fp32[mask], spec).to_dict()
                if backend.name in skew:
                    row.update(status="failed", reason=skew[backend.name])
    # the rooflines only scale ONNX Runtime's and the integer rows (and cost a process and ~6 s)
    wanted = any(b.name in BASELINE_ORDER or b.precision.startswith("int8") for b in backends)
    roofline = _gemm_roofline(options.threads) if wanted else {"gemm_gflops": None, "skipped": "no row uses it"}
    rows = []
    baseline = next((results[n]["latency"]["p50_ms"] for n in BASELINE_ORDER
                     if n in results and results[n].get("status") == "measured"), None)
    tflite_fp32_p50s = list(results.get("tflite-fp32", {}).get("repeats_p50_ms", []))
    for backend in backends:
        row = results[backend.name]
        p50s = row.pop("repeats_p50_ms")
        entry = {"backend": backend.name, "format": backend.format, "precision": backend.precision,
                 "file": backend.artifact, "size_mb": backend.bytes / 1e6, **row}
        entry["status"] = _row_status(row, row.get("verdict"))
        artifact = next((a for a in manifest.artifacts if a.file == backend.artifact), None)
        if artifact is not None and "adaptive" in artifact.details:
            entry["adaptive"] = artifact.details["adaptive"]
        if artifact is not None and artifact.readiness:
            entry["accelerated_where"] = readiness_summary(artifact.readiness)
        if p50s:
            entry["repeats_p50_ms"] = p50s
            entry["repeat_spread"] = (max(p50s) - min(p50s)) / float(np.median(p50s))
            if baseline:
                entry["ratio_to_ort"] = row["latency"]["p50_ms"] / baseline
            if backend.format == "tflite" and len(tflite_fp32_p50s) == len(p50s):
                # per round: both timed in the same round of fresh processes, so machine load hits both alike
                per_round = [a / b for a, b in zip(p50s, tflite_fp32_p50s)]
                entry["ratio_to_tflite_fp32_per_round"] = per_round
                entry["ratio_to_tflite_fp32"] = float(np.median(per_round))
        rows.append(entry)
    int8_limit = roofline.get("int8_gemm_gops")
    for entry in rows:  # integer files against the integer roofline (2 ops per MAC, as for fp32)
        if entry["precision"].startswith("int8") and entry.get("latency") and int8_limit:
            entry["gops"] = 2 * spec.macs / (entry["latency"]["p50_ms"] / 1000) / 1e9
            entry["share_of_int8_gemm"] = entry["gops"] / int8_limit
    peer = next((b for b in backends if (b.format, b.precision) == PEER and b.name in integer_outputs), None)
    if peer is not None:
        _compare_with_peer(rows, peer.name, integer_outputs, judged_mask_for(manifest, inputs, peer.precision),
                           refs.fp32, spec)
    ort = next((r for n in BASELINE_ORDER for r in rows if r["backend"] == n and "latency" in r), None)
    throughput = {}
    if ort and roofline.get("gemm_gflops"):
        ort_gflops = 2 * spec.macs / (ort["latency"]["p50_ms"] / 1000) / 1e9
        throughput = {"ort_backend": ort["backend"], "ort_gflops": ort_gflops,
                      "gemm_gflops": roofline["gemm_gflops"], "ort_share_of_gemm": ort_gflops / roofline["gemm_gflops"]}
    bench = {
        "variant": manifest.variant,
        "checkpoint": manifest.checkpoint,
        "spec": spec.to_dict(),
        "machine": machine_info(options.threads),
        "versions": tool_versions(),
        "settings": {**options.settings.__dict__, "threads": options.threads, "repeats": options.repeats,
                     "process_per_backend": True},
        "inputs": {"images_dir": str(inputs.photos_dir), "sources": list(inputs.sources),
                   **{f"n_{group}": int(mask.sum()) for group, mask in groups.items()},
                   "seed": manifest.verification["seed"], "judged_on": inputs.judged_group},
        "gates": {**manifest.gates, "fp32_noise_floor_px": refs.noise_px},
        "joint_names": manifest.joints["names"],
        "roofline": {**roofline, **throughput},
        "backends": rows,
    }
    write_json_atomic(bench, out_dir / BENCH_JSON)
    arm64_json = out_dir / BENCH_ARM64_JSON  # and keeps the phone costs of an earlier `bench --arch arm64`
    model_card.write(out_dir, manifest, bench, json.loads(arm64_json.read_text()) if arm64_json.is_file() else None)
    write_reports(bench, out_dir)
    return bench
