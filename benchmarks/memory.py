"""Memory a file needs in its runtime: peak resident memory of a fresh process that opens it and runs it
once, above the same process with the runtime imported and nothing opened. Measured natively on THIS
machine (x86-64) with the arm64 worker script itself (runtimes/arm64/worker.py: numpy and the runtime
only, one thread, the options the emulated cores get), one process per file.

Why not on the emulated cores: qemu user mode's resident memory is the emulator's (its translated-code
cache grows with the code run), not the guest's. Where arm64 differs from these figures: the weights a
runtime packs at open are laid out per instruction set (XNNPACK packs int8 weights for the dot-product or
i8mm kernels, and fp16 weights to fp16 on cores with FP16 arithmetic when a file asks for fp16 inference:
half the packed fp32 size), code size differs, and ONNX Runtime's pre-packed GEMM weights follow MLAS's
per-ISA layout. The file's own bytes (mapped by LiteRT, read into memory by ONNX Runtime) are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes.arm64.runner import WORKER
from runtimes.litert import SIGNATURE_KEY

#: What the figures are, wherever they are shown.
MEMORY_LABEL = ("peak resident memory above the imported runtime, MB, measured natively on this x86-64 machine "
                "(one process per file, one thread)")


@dataclass(frozen=True)
class MemoryRow:
    file: str
    runtime: str
    runtime_mb: float | None  # the process with numpy and the runtime imported (the baseline)
    open_mb: float | None  # peak above the baseline once the file is opened
    first_result_mb: float | None  # peak above the baseline once it has run once
    status: str  # "measured" | "failed"
    reason: str | None = None


def _measure(artifact: Path, runtime: str, layout: str, inputs_npy: Path, folder: Path) -> MemoryRow:
    request = {"artifact": str(artifact.resolve()), "runtime": runtime, "layout": layout, "threads": 1,
               "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "signature": SIGNATURE_KEY,
               "inputs": str(inputs_npy), "outputs": str(folder / "outputs.npy"), "warmup": True, "steady": False}
    (folder / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-s", str(WORKER), str(folder / "request.json")], capture_output=True,
                          text=True, env=env, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return MemoryRow(artifact.name, runtime, None, None, None, "failed", last[:200])
    rss = json.loads(lines[-1])["peak_rss"]
    base = rss["imported_kb"]
    return MemoryRow(artifact.name, runtime, base / 1024, (rss["opened_kb"] - base) / 1024,
                     (rss["first_result_kb"] - base) / 1024, "measured")


def measure_memory(files: Sequence[tuple[Path, str, str]], x_nchw: np.ndarray, parallel: int = 2) -> list[MemoryRow]:
    """(artifact, runtime, layout) each in its own fresh process, opened and run once on ``x_nchw`` (1 input)."""
    with tempfile.TemporaryDirectory(prefix="memory-") as tmp:
        inputs_npy = Path(tmp) / "inputs.npy"
        np.save(inputs_npy, np.ascontiguousarray(x_nchw[:1], dtype=np.float32))

        def one(i: int) -> MemoryRow:
            folder = Path(tmp) / str(i)
            folder.mkdir()
            return _measure(*files[i], inputs_npy, folder)

        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(one, range(len(files))))


def to_dict(row: MemoryRow) -> dict:
    return asdict(row)
