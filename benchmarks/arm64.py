"""`convnextpose bench OUT --arch arm64`: guest instructions per inference of every .tflite, .onnx and .ort on
each emulated phone core -- a deterministic cost on the phone's instruction set, not phone time.

Counted by the plugin runtimes/arm64/insn_count.c between two marks the worker sets around each
inference (imports, model loading and a warm-up inference are outside), under qemu 7.2 with
address-space randomisation off; one thread. Ratios are to TFLite fp32 and ONNX Runtime fp32 on the
same core model, so they compare files, not emulators. The x86 latency bench stays what it is:
this machine's milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import ConvNeXtPoseError
from common.files import write_atomic, write_json_atomic
from common.machine import cpu_name
from common.tables import format_table
from judging.cross_isa import arm64_candidates
from judging.golden import GOLDEN_DIR, GOLDEN_JSON
from judging.manifest import Manifest
from runtimes.arm64.runner import DEFAULT_TIMEOUT_S, EmulatedJob, EmulationFailed, run_jobs
from runtimes.arm64.target import CPU_MODELS, CpuModel, ensure_ready

BENCH_ARM64_JSON = "bench_arm64.json"
BENCH_ARM64_MD = "bench_arm64.md"
#: Counted inferences per file and core (after one uncounted warm-up): the count repeats to < 0.01 %.
COUNTED_INFERENCES = 1
NOT_PHONE_TIME = ("Guest instructions per inference on an emulated core (qemu user mode, one thread): a "
                  "deterministic measure of the work each file asks of that instruction set, not phone time -- "
                  "memory, caches and a core's width decide the milliseconds on a real phone.")


@dataclass(frozen=True)
class CountRow:
    file: str
    precision: str
    runtime: str
    cpu: str
    instructions: tuple[int, ...]  # per counted inference
    status: str  # "counted" | "failed"
    reason: str | None = None

    @property
    def per_inference(self) -> float | None:
        return float(np.median(self.instructions)) if self.instructions else None


def first_golden_input(out_dir: Path) -> np.ndarray:
    path = Path(out_dir) / GOLDEN_DIR / GOLDEN_JSON
    if not path.is_file():
        raise ConvNeXtPoseError(f"{path} not found: the arm64 bench counts on the first golden input; re-export")
    entry = json.loads(path.read_text())["inputs"][0]
    return np.fromfile(path.parent / entry["nchw"]["file"], dtype="<f4").reshape(entry["nchw"]["shape"])


def count_instructions(out_dir: Path, cpus: tuple[CpuModel, ...] = CPU_MODELS, only: tuple[str, ...] = (),
                       inferences: int = COUNTED_INFERENCES, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[CountRow]:
    ensure_ready()
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    manifest.refuse_tampered(out_dir)
    arts = [a for a in arm64_candidates(manifest.artifacts) if not only or a.file in only]
    if not arts:
        raise ConvNeXtPoseError(f"{out_dir}: no .tflite or .onnx artifact to count"
                                + (f" among {', '.join(only)}" if only else ""))
    x = np.repeat(first_golden_input(out_dir), inferences, axis=0)
    jobs = [EmulatedJob(out_dir / a.file, a.runtime, a.layout, cpu, count=True) for a in arts for cpu in cpus]
    rows = []
    for job, result in zip(jobs, run_jobs(jobs, x, timeout_s, describe="arm64 instruction counts")):
        art = next(a for a in arts if a.file == job.artifact.name)
        if isinstance(result, EmulationFailed):
            rows.append(CountRow(art.file, art.precision, art.runtime, job.cpu.qemu_cpu, (), "failed", str(result)))
        elif len(result.instructions) != len(x):
            rows.append(CountRow(art.file, art.precision, art.runtime, job.cpu.qemu_cpu, (), "failed",
                                 f"{len(result.instructions)} counted spans for {len(x)} inferences"))
        else:
            rows.append(CountRow(art.file, art.precision, art.runtime, job.cpu.qemu_cpu, result.instructions,
                                 "counted"))
    return rows


def _fp32_of(rows: list[CountRow], runtime: str, cpu: str, manifest: Manifest) -> float | None:
    """The fp32 file of ``runtime`` on ``cpu``: the simplified ONNX for ONNX Runtime (what phones get)."""
    formats = {a.file: a.format for a in manifest.artifacts}
    for row in rows:
        if row.runtime == runtime and row.cpu == cpu and row.precision == "fp32" and row.per_inference:
            if runtime != "onnxruntime" or formats.get(row.file) == "onnx-simplified":
                return row.per_inference
    return None


def report(out_dir: Path, rows: list[CountRow]) -> dict:
    manifest = Manifest.read(out_dir)
    record = ensure_ready()
    entries = []
    for row in rows:
        tflite = _fp32_of(rows, "litert", row.cpu, manifest)
        ort = _fp32_of(rows, "onnxruntime", row.cpu, manifest)
        n = row.per_inference
        entries.append({**asdict(row), "m_instructions": None if n is None else n / 1e6,
                        "vs_tflite_fp32": None if n is None or not tflite else n / tflite,
                        "vs_onnxruntime_fp32": None if n is None or not ort else n / ort})
    return {"about": NOT_PHONE_TIME, "counted_by": record.emulators["count"], "host_cpu": cpu_name(),
            "packages": record.packages, "rows": entries}


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def tables(data: dict) -> str:
    rows = [(e["file"], e["cpu"], _cell(e["m_instructions"], ".1f") if e["status"] == "counted" else
             f"failed: {e['reason']}", _cell(e["vs_tflite_fp32"], ".2f"), _cell(e["vs_onnxruntime_fp32"], ".2f"))
            for e in data["rows"]]
    return format_table(("file", "emulated core", "M instructions / inference", "vs TFLite fp32",
                         "vs ONNX Runtime fp32"), rows)


def cheapest(data: dict, runtime: str | None = None) -> dict[str, str]:
    """Per core model: the file (of ``runtime``, or any) with the fewest instructions per inference."""
    best: dict[str, tuple[float, str]] = {}
    for e in data["rows"]:
        if e["m_instructions"] is None or (runtime and e["runtime"] != runtime):
            continue
        if e["cpu"] not in best or e["m_instructions"] < best[e["cpu"]][0]:
            best[e["cpu"]] = (e["m_instructions"], e["file"])
    return {cpu: file for cpu, (_, file) in best.items()}


def write_reports(out_dir: Path, data: dict) -> list[Path]:
    out_dir = Path(out_dir)
    write_json_atomic(data, out_dir / BENCH_ARM64_JSON)
    advice = [f"- {words}: " + "; ".join(f"{cpu} `{file}`" for cpu, file in cheapest(data, runtime).items())
              for words, runtime in (("any runtime", None), ("TFLite", "litert"), ("ONNX Runtime", "onnxruntime"))]
    text = (f"# arm64 instruction counts\n\n{NOT_PHONE_TIME}\n\nCounted by {data['counted_by']} on this machine "
            f"({data['host_cpu']}); runtimes inside: "
            f"{', '.join(f'{k} {v}' for k, v in data['packages'].items())}.\n\n```\n{tables(data)}\n```\n\n"
            "Fewest instructions per inference (the arm64 side of a choice for phones; accuracy is in the "
            "manifest):\n" + "\n".join(advice) + "\n")
    write_atomic(out_dir / BENCH_ARM64_MD, lambda tmp: Path(tmp).write_text(text))
    return [out_dir / BENCH_ARM64_JSON, out_dir / BENCH_ARM64_MD]
