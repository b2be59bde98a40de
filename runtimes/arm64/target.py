"""The emulated phone CPUs and the folder that holds their set-up (`make arm64`).

Everything lives under ``artifacts/cache/arm64``: an aarch64 CPython 3.11 unpacked from Debian's
arm64 packages, the aarch64 wheels of the pinned numpy / ai-edge-litert / onnxruntime, one root
folder per CPU model (qemu's ``-L``: its own ``/proc/cpuinfo``), the emulators and the
instruction-counting plugin. Nothing outside the project changes but Debian packages being installed.

Three emulators, all qemu user mode:
- verifying: Debian 13's ``qemu-user`` 10 (static, unpacked): runs `verify --arch arm64`; no plugins;
- counting: the same qemu 10 source (Debian 13's source package) built here with plugins on
  (``--enable-plugins``, aarch64-linux-user only: ~3.5 min on 2 cores, once): it models all four cores;
- cross-check: Debian 12's ``qemu-user`` 7.2 (installed), the counting emulator before Cortex-A55/A710
  were counted: it models A76 and A53 only and counts the same guest code to within 10^-6 of qemu 10
  (a test keeps it so; the figures counted with it stay comparable).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import RuntimeUnavailableError
from common.paths import CACHE_DIR
from runtimes.versions import version_of

ROOT = CACHE_DIR / "arm64"
SYSROOT = ROOT / "sysroot"  # Debian's arm64 packages unpacked (the aarch64 Python and its C libraries)
SITE = ROOT / "site"  # the aarch64 wheels, installed with pip --target
PLUGIN = ROOT / "plugin" / "insn_count.so"  # built against qemu 10's qemu-plugin.h
COUNTING_QEMU_DIR = ROOT / "qemu-count"
COUNTING_QEMU = COUNTING_QEMU_DIR / "qemu-aarch64"  # qemu 10 built here with plugins: counts on every core
CROSS_CHECK_QEMU = "qemu-aarch64"  # Debian 12's qemu-user 7.2 (installed): the former counting emulator
CROSS_CHECK_PLUGIN = ROOT / "plugin" / "insn_count-qemu7.so"  # built against qemu 7.2's qemu-plugin.h
FAST_QEMU_DIR = ROOT / "qemu-fast"
FAST_QEMU = FAST_QEMU_DIR / "qemu-aarch64"  # Debian 13's qemu-user 10 (unpacked): 2x faster than 7.2, no plugins
TARGET_RECORD = ROOT / "target.json"  # written last by the set-up: what is installed, for the manifest
GUEST_PYTHON = "/usr/bin/python3.11"  # as the guest sees it; qemu's -L maps it into the CPU's root
#: The packages the emulated Python has, at this machine's versions.
GUEST_PACKAGES = ("numpy", "ai-edge-litert", "onnxruntime")
SETUP_HINT = "run `make arm64` (installs qemu-user, an aarch64 Python and the runtimes' arm64 wheels; once)"


@dataclass(frozen=True)
class CpuModel:
    """One phone-class core as qemu models it. ``part`` and ``features`` go into the emulated
    /proc/cpuinfo, which must match the qemu model (ONNX Runtime reads it at import; another core's
    file dies with SIGILL)."""

    qemu_cpu: str
    label: str
    isa: str
    part: str  # MIDR part number
    features: str  # /proc/cpuinfo "Features" (what Linux reports on that core)
    #: the instruction classes the counting plugin tells apart that this core has (insn_count.c):
    #: "dot" (int8 dot product), "fp16" (half-precision arithmetic), "i8mm" (int8 matrix multiply), "bf16", "sve"
    extensions: tuple[str, ...] = ()
    cross_checked: bool = False  # qemu 7.2 (the cross-check emulator) models it too
    root_dir: Path | None = None  # default: the set-up's own folder for this model

    def root(self) -> Path:
        return self.root_dir or ROOT / "cpus" / self.qemu_cpu

    def cpuinfo(self) -> str:
        return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {self.features}\nCPU implementer\t: 0x41\n"
                f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {self.part}\nCPU revision\t: 0\n\n")


_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V80 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
#: The phone cores every arm64 verdict and count covers: today's LITTLE (A55) and big (A76, A710) cores, and
#: the 2012 design without dot product (A53). qemu's default ``max`` model is not one of them on purpose:
#: qemu 7.2's SME emulation computes wrong int8 TFLite results (toolchain note).
CPU_MODELS: tuple[CpuModel, ...] = (
    CpuModel("cortex-a55", "Cortex-A55 (ARMv8.2-A + dot product, FP16; the LITTLE cores of 2017-2023 phones)",
             "armv8.2-a+dotprod+fp16", "0xd05", _V82, ("dot", "fp16")),
    CpuModel("cortex-a76", "Cortex-A76 (ARMv8.2-A + dot product, FP16; phones' big cores since 2019)",
             "armv8.2-a+dotprod+fp16", "0xd0b", _V82, ("dot", "fp16"), cross_checked=True),
    CpuModel("cortex-a710", "Cortex-A710 (Armv9.0-A: + int8 matrix multiply, BF16, SVE2; big cores since 2022)",
             "armv9-a+i8mm+bf16+sve2", "0xd47",
             _V82 + " jscvt fcma sha3 sm3 sm4 sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp sve2 "
             "sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 bti",
             ("dot", "fp16", "i8mm", "bf16", "sve")),
    CpuModel("cortex-a53", "Cortex-A53 (ARMv8.0-A: no dot product, no FP16 arithmetic; 2012 design, low-end phones)",
             "armv8-a", "0xd03", _V80, cross_checked=True),
)


#: The core fp16 arithmetic is judged on (a file tagged for it runs in fp16 there): ARMv8.2-A with FP16.
FP16_CORE = "cortex-a76"


def cpu_model(name: str) -> CpuModel:
    for cpu in CPU_MODELS:
        if cpu.qemu_cpu == name:
            return cpu
    raise ValueError(f"unknown arm64 CPU model {name!r}; known: {', '.join(c.qemu_cpu for c in CPU_MODELS)}")


@dataclass(frozen=True)
class TargetRecord:
    """What the set-up installed (read back from ``target.json``)."""

    emulators: dict[str, str]  # role ("verify", "count", "cross-check") -> "qemu-aarch64 version ..."
    python: str
    packages: dict[str, str]  # package -> version, inside the emulated Python


def ensure_ready() -> TargetRecord:
    """The installed target, or one clear error naming what is missing and the make target."""
    missing = []
    if shutil.which(CROSS_CHECK_QEMU) is None:
        missing.append("qemu-aarch64 (Debian package qemu-user)")
    if not COUNTING_QEMU.is_file():
        missing.append(f"the counting qemu-aarch64 in {COUNTING_QEMU_DIR}")
    if not FAST_QEMU.is_file():
        missing.append(f"Debian 13's qemu-aarch64 in {FAST_QEMU_DIR}")
    if not TARGET_RECORD.is_file():
        missing.append(f"the arm64 Python and wheels in {ROOT}")
    missing += [f"the root folder of {c.qemu_cpu}" for c in CPU_MODELS if not (c.root() / "proc" / "cpuinfo").is_file()]
    if missing:
        raise RuntimeUnavailableError(f"arm64 target not set up (missing: {'; '.join(missing)}): {SETUP_HINT}")
    data = json.loads(TARGET_RECORD.read_text())
    stale = [f"{name} {data.get('packages', {}).get(name)} (here {version_of(name)})" for name in GUEST_PACKAGES
             if data.get("packages", {}).get(name) != version_of(name)]
    if stale or "count" not in data.get("emulators", {}) or "cross-check" not in data["emulators"]:
        raise RuntimeUnavailableError(f"arm64 target out of date ({'; '.join(stale) or 'older set-up'}): {SETUP_HINT}")
    return TargetRecord(emulators=dict(data["emulators"]), python=data["python"], packages=dict(data["packages"]))
