"""The checks hold on CPUs other than this one: `convnextpose verify` re-runs every artifact of the
session's exports and judges it again in a fresh process whose PyTorch is capped to another
instruction set (oneDNN's ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) or runs on one thread.

PyTorch computes the references, the fp32 noise floor and the Core ML evaluator's output, and its
fp32 soft-argmax is what moved between CPUs before (docs/judging.md). ONNX Runtime's MLAS
and XNNPACK choose kernels by CPUID with no run-time cap (only build options), so their side of the
difference is covered by the noise floor's machine-independent summation orders instead.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

ELSEWHERE = {
    "avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}, "2"),
    "sse41-no-vector-aten": ({"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}, "2"),
    "one-thread": ({}, "1"),
}


def _verify(out, env: dict, threads: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "verify", str(out), "--threads", threads],
                          env={**os.environ, **env}, capture_output=True, text=True)


# AVX2 on the untrained export repeats what AVX2 on the full export checks (its fp32 files, plus the integer
# ones), and one thread is the least distant of the three: the campaign tier keeps them, so make test stays
# within its 10 minutes
@pytest.mark.parametrize("where, export", [("avx2", "xs_int8_export"),
                                           pytest.param("one-thread", "xs_int8_export", marks=pytest.mark.campaign),
                                           ("sse41-no-vector-aten", "xs_export"),
                                           pytest.param("avx2", "xs_export", marks=pytest.mark.campaign)])
def test_every_artifact_passes_verify_on_an_emulated_cpu(where, export, request):
    out = request.getfixturevalue(export)[0]
    env, threads = ELSEWHERE[where]
    proc = _verify(out, env, threads)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every artifact matches its sha256 and passes its checks" in proc.stdout
    assert "Traceback" not in proc.stderr
