"""A stage built in a forked process while the others run: the Core ML stage (11.5 s of a 42 s export of S,
built from the PyTorch model alone) and the ONNX int8 stage (4 s, from the simplified ONNX) overlap the
TFLite stages.

The child is a fork of the export once the stages it requires are done, so it sees the same ExportRun,
model, references and calibration (and a test's patches); it builds and verifies the stage's files into the
same staging folder exactly as inline, in one torch thread (a forked OpenMP pool hangs), then sends back
what it recorded: published artifacts, rejections, skips and the joints it verified. The parent merges them
where the stage would have run, so the manifest's order and every verdict are those of an inline build. The
child dies with the parent (PR_SET_PDEATHSIG), exits on Ctrl-C without a word, and a child that dies before
answering rejects its stage's artifacts as a stage crash. Linux only: on macOS the Core ML framework (used
to verify there) must not be forked; elsewhere the stage runs inline.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common import interrupts
from exporters.formats import ExportFormat
from exporters.pipeline.export_run import ExportRun
from judging.manifest import Artifact, Rejection

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


@dataclass
class StageRecord:
    """What the child recorded in its copy of the ExportRun."""

    artifacts: list[Artifact] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_kinds: set[tuple[str, str]] = field(default_factory=set)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: dict | None = None  # the manifest's calibration record, when the child made the choice
    seconds: float = 0.0
    no_space: str | None = None  # the child ran out of disk: the whole export stops, as inline


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class SideStage:
    """``build(run, fmt)`` started in a forked child; :meth:`merge` waits for it and records its outcome."""

    def __init__(self, run: ExportRun, fmt: ExportFormat, build: Callable[[ExportRun, ExportFormat], None]) -> None:
        self.fmt = fmt
        sys.stdout.flush()  # the child flushes its copy of these buffers when it exits
        sys.stderr.flush()
        context = multiprocessing.get_context("fork")
        self._answer, child_end = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(run, fmt, build, child_end, os.getpid()),
                                        name=f"stage-{fmt.name}", daemon=True)
        try:
            # A Ctrl-C during the fork would land in an at-fork hook (logging's lock release), where Python
            # prints "Exception ignored" and drops it: the export ran on to exit 0 (measured). Held, it is
            # raised once the child exists, and the child is stopped before the export unwinds.
            with interrupts.held():
                self._process.start()
        except KeyboardInterrupt:
            self.stop()
            raise
        child_end.close()
        log.info("stage %s started beside the others (pid %d)", fmt.name, self._process.pid)

    def merge(self, run: ExportRun) -> float:
        """Wait for the child, add what it recorded to ``run``; the seconds the stage took in the child."""
        try:
            record: StageRecord = self._answer.recv()
        except EOFError:  # killed, or crashed below Python: a stage crash like any other
            self._process.join()
            raise RuntimeError(f"the process building it died (exit code {self._process.exitcode})") from None
        finally:
            self._answer.close()
        self._process.join()
        if record.no_space:
            raise OSError(errno.ENOSPC, record.no_space)
        run.artifacts += record.artifacts
        run.rejected += record.rejected
        run.skipped |= record.skipped
        run.skipped_kinds |= record.skipped_kinds
        run.outputs |= record.outputs
        if run.calibration is None:
            run.calibration = record.calibration
        return record.seconds

    def stop(self) -> None:
        """The export is ending (an error, Ctrl-C, or done): the child must not write on into staging."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join()


def _child(run: ExportRun, fmt: ExportFormat, build: Callable, answer, parent: int) -> None:
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # the parent's OpenMP pool does not survive the fork: a parallel region would hang
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # Ctrl-C reaches the group: the parent speaks
    before_artifacts, before_rejected = len(run.artifacts), len(run.rejected)
    before_skipped, before_kinds = dict(run.skipped), set(run.skipped_kinds)
    start = time.perf_counter()
    record = StageRecord()
    try:
        build(run, fmt)
    except OSError as exc:  # build re-raises only a full disk
        record.no_space = str(exc)
    new = run.artifacts[before_artifacts:]
    record.artifacts, record.rejected = new, run.rejected[before_rejected:]
    record.skipped = {k: v for k, v in run.skipped.items() if k not in before_skipped}
    record.skipped_kinds = run.skipped_kinds - before_kinds
    record.outputs = {a.file: run.outputs[a.file] for a in new if a.file in run.outputs}
    record.calibration = run.calibration
    record.seconds = time.perf_counter() - start
    answer.send(record)
    answer.close()


def _die_with_parent(parent: int) -> None:
    """SIGKILL this child when the export process dies (a kill -9 must not leave it writing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
