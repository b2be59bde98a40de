"""One backend in its own process: load, first inference, timed phase, parity outputs, peak RSS.

Run by benchmarks.run as `python -m benchmarks.worker JOB.json`; writes RESULT.json and the
backend's joints on the parity inputs as .npy. A separate process per backend keeps thread pools
(ONNX Runtime's spinning threads) and memory from leaking between backends.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.backends import Backend, open_backend
from benchmarks.latency import LatencySettings, measure
from judging.manifest import Manifest


@dataclass(frozen=True)
class WorkerJob:
    backend: Backend
    out_dir: str
    threads: int
    inputs_npy: str  # (N, 3, S, S) float32 in the artifacts' input contract
    outputs_npy: str | None  # None: a later round, timed only (parity is computed once, in round 0)
    result_json: str
    settings: LatencySettings

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerJob":
        d = json.loads(text)
        return cls(**{**d, "backend": Backend(**d["backend"]), "settings": LatencySettings(**d["settings"])})


def run_job(job: WorkerJob) -> dict:
    out_dir = Path(job.out_dir)
    manifest = Manifest.read(out_dir)
    inputs = np.load(job.inputs_npy)
    t0 = time.perf_counter()
    opened = open_backend(job.backend, out_dir, job.threads, manifest)
    load_s = time.perf_counter() - t0
    predict = opened.predict
    result = {"status": "measured", "runtime": opened.runtime, "threads": job.threads}
    if opened.timed:
        timed_input = np.ascontiguousarray(inputs[:1])  # prepared outside the clock
        t0 = time.perf_counter()
        predict(timed_input)
        first_ms = (time.perf_counter() - t0) * 1000
        stats = measure(lambda: predict(timed_input), job.settings)
        result.update(load_s=load_s, first_inference_ms=first_ms, latency=stats.to_dict())
    else:
        result.update(status="parity only", reason=opened.note)
    if job.outputs_npy is not None:
        np.save(job.outputs_npy, opened.run_all(inputs).astype(np.float32))
    if opened.timed:  # the reference evaluator's memory says nothing about the target either
        result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float | None:
    """This process's peak resident memory. VmHWM, not getrusage: ru_maxrss survives exec, so a
    child started from a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def main(argv: list[str]) -> int:
    job = WorkerJob.from_json(Path(argv[0]).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = run_job(job)
    except Exception as exc:  # reported as a failed row, not a crashed benchmark
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    Path(job.result_json).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
