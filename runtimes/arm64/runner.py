"""Run artifacts on emulated arm64 CPUs: the worker (runtimes/arm64/worker.py) in qemu user mode,
inputs and outputs crossing by .npy files, instruction counts from the counting plugin's log.

One emulator process per (artifact, CPU model): a file that crashes or hangs its emulator costs
that job only (:class:`EmulationFailed` names the file, the CPU and why), and the jobs of one call
run side by side on the host's cores, the longest first. The same session interface as every other
runtime is offered by :func:`open_session`, for code that judges one artifact at a time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.errors import ConvNeXtPoseError
from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes.arm64 import target
from runtimes.arm64.target import PLUGIN, SITE, CpuModel, TargetRecord
from runtimes.litert import SIGNATURE_KEY
from runtimes.session import Session

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("worker.py")
#: Runtime keys (runtimes.RUNTIMES) whose arm64 builds the target has.
ARM64_RUNTIMES = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}
#: A job is killed after this long (seconds) unless the caller says otherwise: an S fp32 file on 4 inputs
#: takes ~70 s on the verifying emulator, ~150 s while counting.
DEFAULT_TIMEOUT_S = 900.0


class EmulationFailed(ConvNeXtPoseError):
    """One artifact could not be run on one emulated CPU (emulator died, timed out, runtime error)."""


#: What a job's ``cache`` does (worker.py): "write" opens the file and fills the runtime's weight cache
#: (the first start after install), "read" opens it from that cache (every later start).
CACHE_PHASES = ("write", "read")


@dataclass(frozen=True)
class EmulatedJob:
    """One artifact on one emulated CPU model. ``count``: under the counting emulator, the first span from
    before opening the file to its first result (the first frame: its one-off work is not the steady
    state), then each input counted. ``cache`` = (cache path, phase): open through the runtime's weight
    cache; ``steady`` False: the first frame only. ``emulator``: "verify" (default unless counting), "count"
    (default when counting) or "cross-check" (qemu 7.2). ``profile``: also the instructions per translated
    block of each span, and the guest's memory map (to attribute them to symbols)."""

    artifact: Path
    runtime: str
    layout: str
    cpu: CpuModel
    count: bool = False
    cache: tuple[Path, str] | None = None
    steady: bool = True
    emulator: str | None = None
    profile: bool = False

    @property
    def name(self) -> str:
        cache = f" ({self.cache[1]} weight cache)" if self.cache else ""
        return f"{self.artifact.name}{cache} on {self.cpu.qemu_cpu}"

    @property
    def role(self) -> str:
        return self.emulator or ("count" if self.count else "verify")


@dataclass(frozen=True)
class Span:
    """One marked span under the counting plugin: guest instructions, and of them the classes it tells apart
    (insn_count.c: dot, i8mm, fp16, bf16, sve)."""

    instructions: int
    mix: dict[str, int]
    blocks: dict[int, int] | None = None  # profile: translated-block start address -> instructions


@dataclass(frozen=True)
class EmulatedRun:
    job: EmulatedJob
    outputs: np.ndarray  # (N, J, 3) float32
    instructions: tuple[int, ...]  # guest instructions per counted inference (empty unless job.count)
    seconds: float
    runtime: str  # "ai-edge-litert 2.3.0 (XNNPACK, aarch64) on emulated cortex-a76, qemu 10.0.13"
    first_frame: Span | None = None  # counted: from before opening the file to its first result
    spans: tuple[Span, ...] = ()  # counted: one per inference (their instructions are ``instructions``)
    memory_map: str | None = None  # profile: the guest's /proc/self/maps at the end
    worker: dict | None = None  # the worker's JSON line (seconds, peak_rss, versions)


def emulator_command(cpu: CpuModel, plugin_log: Path | None = None, counting: bool = False,
                     emulator: str | None = None, profile: bool = False) -> list[str]:
    """qemu-aarch64 on ``cpu`` running the worker. ``emulator`` (target.py): "verify" -- Debian 13's static
    qemu 10 (no plugins); "count" -- qemu 10 built with plugins; "cross-check" -- Debian 12's qemu 7.2.
    Default: "count" when counting or a plugin log is given, else "verify". With ``plugin_log`` the plugin
    is loaded (its log there); counting runs with address-space randomisation off (ONNX Runtime's count
    wobbles by 0.5 % with it)."""
    root = cpu.root()
    role = emulator or ("count" if counting or plugin_log is not None else "verify")
    binary, plugin = {"verify": (target.FAST_QEMU, None), "count": (target.COUNTING_QEMU, PLUGIN),
                      "cross-check": (target.CROSS_CHECK_QEMU, target.CROSS_CHECK_PLUGIN)}[role]
    if role == "cross-check" and not cpu.cross_checked:
        raise ValueError(f"qemu 7.2 (the cross-check emulator) does not model {cpu.qemu_cpu}")
    command = [str(binary), "-cpu", cpu.qemu_cpu, "-L", str(root)]
    if plugin_log is not None:
        if plugin is None:
            raise ValueError("the verifying emulator cannot load plugins")
        command += ["-plugin", f"{plugin},profile={'on' if profile else 'off'}", "-d", "plugin",
                    "-D", str(plugin_log)]
    command += [str(root / "usr" / "bin" / "python3.11"), "-s", str(WORKER)]
    if role != "verify" and shutil.which("setarch"):
        command = ["setarch", "x86_64", "-R", *command]
    return command


def parse_plugin_log(text: str) -> list[Span]:
    """The plugin's lines ("span k n dot=.. ..." then, profiled, "tb k address n") as spans in order."""
    spans: list[Span] = []
    blocks: dict[int, dict[int, int]] = {}
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["span"]:
            spans.append(Span(int(words[2]), {k: int(v) for k, v in (w.split("=") for w in words[3:])}))
        elif words[:1] == ["tb"]:
            blocks.setdefault(int(words[1]), {})[int(words[2], 16)] = int(words[3])
    return [Span(s.instructions, s.mix, blocks.get(k)) for k, s in enumerate(spans)]


def guest_environment(home: Path) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "PYTHONPATH": str(SITE), "PYTHONNOUSERSITE": "1", "HOME": str(home),
            "ORT_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}


def runtime_label(job: EmulatedJob, record: TargetRecord) -> str:
    package = ARM64_RUNTIMES[job.runtime]
    engine = " (XNNPACK, aarch64)" if job.runtime == "litert" else " CPU (aarch64)"
    words = record.emulators[job.role].split()  # "qemu-aarch64 version 10.0.13 ..."
    return (f"{package} {record.packages.get(package, '?')}{engine} on emulated {job.cpu.qemu_cpu}, "
            f"qemu {words[2] if len(words) > 2 else '?'}")


def _died(code: int) -> str:
    if code < 0:
        try:
            return f"the emulator died of {signal.Signals(-code).name}"
        except ValueError:
            return f"the emulator died of signal {-code}"
    return f"the emulated process exited with code {code}"


def run_job(job: EmulatedJob, inputs_npy: Path, workdir: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> EmulatedRun:
    """Run ``job`` on the inputs saved in ``inputs_npy`` (N, 3, S, S) NCHW float32; raises EmulationFailed."""
    if job.runtime not in ARM64_RUNTIMES:
        raise EmulationFailed(f"{job.name}: runtime {job.runtime!r} has no arm64 build on this target "
                              f"(arm64 runs {', '.join(ARM64_RUNTIMES)})")
    record = target.ensure_ready()
    folder = Path(tempfile.mkdtemp(prefix=f"{job.artifact.stem}-{job.cpu.qemu_cpu}-", dir=workdir))
    outputs, plugin_log, maps = folder / "outputs.npy", folder / "plugin.log", folder / "maps.txt"
    request = {"artifact": str(job.artifact.resolve()), "runtime": job.runtime, "layout": job.layout, "threads": 1,
               "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "signature": SIGNATURE_KEY,
               "inputs": str(inputs_npy.resolve()), "outputs": str(outputs), "warmup": job.count,
               "first_frame": job.count, "steady": job.steady,
               "cache": {"path": str(job.cache[0]), "phase": job.cache[1]} if job.cache else None,
               "maps": str(maps) if job.profile else None}
    (folder / "request.json").write_text(json.dumps(request))
    command = [*emulator_command(job.cpu, plugin_log if job.count else None, emulator=job.role, profile=job.profile),
               str(folder / "request.json")]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=guest_environment(folder), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EmulationFailed(f"{job.name}: timed out after {timeout_s:g} s (emulator killed)") from None
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not outputs.is_file():
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        # a runtime's own last word (e.g. LiteRT's "FATAL ERROR: ... compiled with lse enabled") over qemu's
        last = next((line for line in reversed(lines) if "FATAL" in line), lines[-1] if lines else "no message")
        raise EmulationFailed(f"{job.name}: {_died(done.returncode)} ({last[:200]})")
    first: Span | None = None
    spans: list[Span] = []
    if job.count:
        first, *spans = parse_plugin_log(plugin_log.read_text()) or [None]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return EmulatedRun(job, np.load(outputs), tuple(s.instructions for s in spans), seconds,
                       runtime_label(job, record), first, tuple(spans),
                       maps.read_text() if job.profile and maps.is_file() else None,
                       json.loads(lines[-1]) if lines else None)


def _expected_cost(job: EmulatedJob) -> float:
    """For ordering only: float files are the slow ones under emulation (integer ~6x cheaper per byte)."""
    size = job.artifact.stat().st_size if job.artifact.exists() else 0
    return size * (1.0 if "int8" in job.artifact.name else 6.0)


def host_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_jobs(jobs: Sequence[EmulatedJob], inputs_nchw: np.ndarray, timeout_s: float = DEFAULT_TIMEOUT_S,
             parallel: int | None = None, describe: str = "arm64") -> list[EmulatedRun | EmulationFailed]:
    """Every job on the same inputs, side by side on the host's cores, longest first; one result per job
    in the order given (a failure is returned, not raised: the others still run)."""
    target.ensure_ready()
    parallel = parallel or host_cores()
    with tempfile.TemporaryDirectory(prefix="arm64-") as tmp:
        inputs_npy = Path(tmp) / "inputs.npy"
        np.save(inputs_npy, np.ascontiguousarray(inputs_nchw, dtype=np.float32))
        order = sorted(range(len(jobs)), key=lambda i: -_expected_cost(jobs[i]))
        results: list[EmulatedRun | EmulationFailed | None] = [None] * len(jobs)

        def one(i: int) -> None:
            try:
                results[i] = run_job(jobs[i], inputs_npy, Path(tmp), timeout_s)
                log.debug("%s: %.1f s", jobs[i].name, results[i].seconds)
            except EmulationFailed as exc:
                results[i] = exc

        with ThreadPoolExecutor(parallel) as pool, tqdm(total=len(jobs), desc=describe, unit="run",
                                                         disable=None) as bar:
            for _ in pool.map(lambda i: (one(i), bar.update()), order):
                pass
    return results  # type: ignore[return-value]


def open_session(runtime: str, path: Path, layout: str, cpu: CpuModel, timeout_s: float = DEFAULT_TIMEOUT_S) -> Session:
    """The common session interface over one emulated CPU: ``run_all`` sends every input to one emulator
    process (starting the emulated Python costs seconds), ``predict`` one input."""
    job = EmulatedJob(Path(path), runtime, layout, cpu)
    batch: Callable[[np.ndarray], np.ndarray] = lambda x: _run_or_raise(job, x, timeout_s)
    return Session(batch, runtime_label(job, target.ensure_ready()), batch=batch)


def _run_or_raise(job: EmulatedJob, inputs_nchw: np.ndarray, timeout_s: float) -> np.ndarray:
    result = run_jobs([job], inputs_nchw, timeout_s, parallel=1)[0]
    if isinstance(result, EmulationFailed):
        raise result
    return result.outputs
