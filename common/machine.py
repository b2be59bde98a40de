"""What this machine is, in the words a figure needs beside it (which CPU it was measured on)."""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The host CPU's model name (e.g. "AMD EPYC 7B13"), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> str:
    return platform.machine()  # x86_64, aarch64, arm64
