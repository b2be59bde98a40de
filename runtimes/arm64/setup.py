"""Build the arm64 target (`make arm64` runs ``python -m runtimes.arm64.setup``). Idempotent.

Steps, each skipped when its result is already there:
1. Debian's ``qemu-user`` 7.2 and the build tools (gcc, glib headers, ninja, dpkg-dev), with apt-get when
   run as root; qemu 7.2 is the cross-check emulator (target.py). Debian 13's ``qemu-user`` 10 is unpacked
   into the cache (not installed): it runs the same guest code 2x faster than 7.2 (XS fp32 TFLite: 8.4 s
   per inference against 17.8 s, same outputs bit for bit), so it runs the verification; it cannot load
   plugins (built static, ``--disable-plugins``). So the counting emulator is built here from the same
   source: Debian 13's qemu source package (``apt-get source`` through a private apt configuration,
   Debian's patches applied by ``dpkg-source``), configured for aarch64 user mode with plugins, with
   Debian 13's ``meson`` unpacked beside it (qemu 10 needs meson >= 1.5; Debian 12 has 1.0). Measured:
   3 min 26 s on this 2-core machine (1 min 56 s of CPU), ~40 MB of downloads; only the binary is kept;
2. Debian's arm64 packages of CPython 3.11 and its C libraries, fetched with a *private* apt
   configuration (own sources list, lists and archive folders under the cache: the system's apt
   sources and architectures are not touched) and unpacked with ``dpkg-deb -x``;
3. the aarch64 wheels of exactly the versions installed here (numpy, ai-edge-litert, onnxruntime
   and what they need), ``pip download --platform ... --only-binary=:all:`` then ``pip install --target``;
4. one root folder per CPU model: links into the unpacked system plus its own ``/proc/cpuinfo``;
5. the instruction-counting plugin, built twice from one source: against qemu 10's ``qemu-plugin.h`` (plugin
   API v4) and against qemu 7.2's from Debian 12's qemu source package (API v1);
6. a self-check: the emulated Python imports the runtimes on every CPU model; ``target.json`` last.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from runtimes import debian
from runtimes.arm64 import target
from runtimes.arm64.target import CPU_MODELS, PLUGIN, ROOT, SITE, SYSROOT
from runtimes.debian import DEBIAN_MIRROR, DEBIAN_SECURITY, PrivateApt

log = logging.getLogger("arm64-setup")

HOST_PACKAGES = {"qemu-aarch64": "qemu-user", "gcc": "gcc", "pkg-config": "pkg-config", "ninja": "ninja-build",
                 "dpkg-source": "dpkg-dev", "xz": "xz-utils"}
GLIB_PACKAGE = "libglib2.0-dev"
#: Debian's own Python builds qemu (its configure makes a venv: python3-venv)
BUILD_PYTHON = "/usr/bin/python3"
#: Debian's arm64 packages the emulated Python needs: the interpreter, its standard library and the
#: C libraries it, numpy, LiteRT and ONNX Runtime link against.
GUEST_DEBS = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
              "libffi8", "libssl3", "libgcc-s1", "libstdc++6", "libbz2-1.0", "liblzma5", "libuuid1")
#: The runtimes whose arm64 builds judge the files: the same versions as on this machine.
GUEST_WHEELS = target.GUEST_PACKAGES
#: Every manylinux tag the unpacked glibc (Debian 12: 2.36) satisfies; LiteRT ships manylinux_2_27 only.
GUEST_GLIBC_MINOR = 36
WHEEL_PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, GUEST_GLIBC_MINOR + 1)))
PLUGIN_SOURCE = Path(__file__).with_name("insn_count.c")


WHO = "arm64 set-up"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return debian.run(cmd, WHO, **kwargs)


# ---- 1. host tools ---------------------------------------------------------------------------

def host_tools() -> None:
    missing = [pkg for tool, pkg in HOST_PACKAGES.items() if shutil.which(tool) is None]
    has_glib = shutil.which("pkg-config") is not None and subprocess.run(
        ["pkg-config", "--exists", "glib-2.0"], capture_output=True).returncode == 0
    if not has_glib:
        missing.append(GLIB_PACKAGE)
    if subprocess.run([BUILD_PYTHON, "-c", "import ensurepip, venv"], capture_output=True).returncode != 0:
        missing.append("python3-venv")
    debian.install_system_packages(missing, WHO, "arm64")


# ---- 2. Debian arm64 packages through a private apt configuration -----------------------------

def private_apt() -> PrivateApt:
    sources = {DEBIAN_MIRROR: "bookworm bookworm-updates", DEBIAN_SECURITY: "bookworm-security"}
    return debian.private_apt(ROOT / "apt", "arm64", debian.source_lines("arm64", sources, ("deb", "deb-src")), WHO)


def guest_system(apt: PrivateApt) -> None:
    if (SYSROOT / target.GUEST_PYTHON.lstrip("/")).is_file():
        return
    debs = apt.folder / "debs"
    log.info("fetching Debian's arm64 CPython 3.11 and its libraries (%d packages)", len(GUEST_DEBS))
    apt.download([f"{p}:arm64" for p in GUEST_DEBS], debs)
    debian.unpack(sorted(debs.glob("*.deb")), SYSROOT, WHO)


def trixie_apt() -> PrivateApt:
    """A private apt configuration for Debian 13 (amd64 binaries and sources)."""
    return debian.private_apt(ROOT / "apt-trixie", "amd64",
                              debian.source_lines("amd64", {DEBIAN_MIRROR: "trixie"}, ("deb", "deb-src")), WHO)


def fast_emulator() -> None:
    """Debian 13's qemu-user, unpacked: the emulator that runs the verification (module docstring)."""
    if target.FAST_QEMU.is_file():
        return
    apt = trixie_apt()
    log.info("fetching Debian 13's qemu-user (unpacked into %s, not installed)", target.FAST_QEMU_DIR)
    debs = apt.folder / "debs"
    apt.download(["qemu-user"], debs)
    unpacked = target.FAST_QEMU_DIR.with_name("qemu-user-trixie")
    debian.unpack([next(debs.glob("qemu-user_*.deb"))], unpacked, WHO)
    target.FAST_QEMU_DIR.mkdir(parents=True, exist_ok=True)
    shutil.move(str(unpacked / "usr" / "bin" / "qemu-aarch64"), target.FAST_QEMU)
    shutil.rmtree(unpacked)
    shutil.rmtree(debs)  # 71 MB of other guests' emulators


def counting_emulator() -> None:
    """qemu 10 with plugins, built from Debian 13's qemu source package (module docstring, step 1)."""
    header = ROOT / "plugin" / "include-qemu10" / "qemu-plugin.h"
    if target.COUNTING_QEMU.is_file() and header.is_file():
        return
    apt = trixie_apt()
    work = ROOT / "qemu-build"
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    log.info("fetching Debian 13's qemu source package and meson (to build the counting emulator, once)")
    apt.apt_get("source", "--download-only", "-qq", "qemu", cwd=work / "src")
    apt.download(["meson"], work)
    run(["dpkg-deb", "-x", str(next(work.glob("meson_*.deb"))), str(work / "meson")])
    dsc = next((work / "src").glob("qemu_*.dsc"))
    run(["dpkg-source", "--no-check", "-x", str(dsc), str(work / "qemu")], cwd=work / "src")
    meson_python = next((work / "meson" / "usr" / "lib").glob("python3*/dist-packages"))
    env = {**os.environ, "PYTHONPATH": str(meson_python),
           "PATH": f"{work / 'meson' / 'usr' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    build = work / "build"
    build.mkdir()
    log.info("configuring and building qemu-aarch64 with plugins (aarch64 user mode only; ~3.5 min on 2 cores)")
    run([str(work / "qemu" / "configure"), f"--python={BUILD_PYTHON}", "--target-list=aarch64-linux-user",
         "--enable-plugins", "--disable-system", "--disable-tools", "--disable-docs", "--disable-werror",
         "--without-default-features", "--disable-install-blobs"], cwd=build, env=env)
    run(["ninja", "-j", str(max(1, len(os.sched_getaffinity(0)))), "qemu-aarch64"], cwd=build, env=env)
    target.COUNTING_QEMU_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "qemu-aarch64", target.COUNTING_QEMU.with_suffix(".partial"))
    header.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "qemu" / "include" / "qemu" / "qemu-plugin.h", header)
    target.COUNTING_QEMU.with_suffix(".partial").rename(target.COUNTING_QEMU)
    shutil.rmtree(work)  # ~400 MB of source and objects for one binary


# ---- 3. aarch64 wheels -----------------------------------------------------------------------

def host_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def wanted_wheels() -> dict[str, str]:
    """The runtimes at this machine's versions, plus their dependencies at this machine's versions
    where it has them (so the arm64 set is the x86 set, package for package)."""
    pins: dict[str, str] = {}
    for name in GUEST_WHEELS:
        version = host_version(name)
        if version is None:
            raise SystemExit(f"arm64 set-up: {name} is not installed here; run `make install` first")
        pins[name] = version
        for requirement in importlib.metadata.requires(name) or []:
            dep = requirement.split(";")[0].split("[")[0]
            for sep in "<>=!~ (":
                dep = dep.split(sep)[0]
            if "extra ==" in requirement or not dep:
                continue
            if (dep_version := host_version(dep)) is not None:
                pins.setdefault(dep, dep_version)
    return pins


def platform_flags() -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for platform in WHEEL_PLATFORMS:
        flags += ["--platform", platform]
    return flags


def guest_wheels() -> dict[str, str]:
    pins = wanted_wheels()
    stamp = SITE / ".pins.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == pins:
        return pins
    wheels = ROOT / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    constraints = ROOT / "constraints.txt"
    constraints.write_text("".join(f"{k}=={v}\n" for k, v in sorted(pins.items())))
    log.info("downloading the aarch64 wheels of %s", ", ".join(f"{k} {pins[k]}" for k in GUEST_WHEELS))
    run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels), "-c", str(constraints),
         *platform_flags(), *(f"{k}=={pins[k]}" for k in GUEST_WHEELS)])
    staging = SITE.with_name("site.partial")
    shutil.rmtree(staging, ignore_errors=True)
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(staging),
         *platform_flags(), *map(str, sorted(wheels.glob("*.whl")))])
    (staging / ".pins.json").write_text(json.dumps(pins, indent=1, sort_keys=True))
    shutil.rmtree(SITE, ignore_errors=True)
    staging.rename(SITE)
    return pins


# ---- 4. one root per CPU model ---------------------------------------------------------------

def cpu_roots() -> None:
    for cpu in CPU_MODELS:
        root = cpu.root()
        root.mkdir(parents=True, exist_ok=True)
        for entry in SYSROOT.iterdir():
            link = root / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.relpath(entry, root))
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc" / "cpuinfo").write_text(cpu.cpuinfo())
        # one core, whatever the host has: the emulated process runs one thread
        cpus = root / "sys" / "devices" / "system" / "cpu"
        cpus.mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present", "online"):
            (cpus / name).write_text("0\n")


# ---- 5. the counting plugin ------------------------------------------------------------------

def plugin_header_qemu7(apt: PrivateApt) -> Path:
    """qemu 7.2's qemu-plugin.h, from Debian 12's qemu source package (for the cross-check plugin)."""
    include = ROOT / "plugin" / "include"
    header = include / "qemu-plugin.h"
    if header.is_file():
        return include
    source = apt.folder / "qemu-source"
    source.mkdir(exist_ok=True)
    log.info("fetching Debian's qemu source package for qemu-plugin.h (once)")
    apt.apt_get("source", "--download-only", "-qq", "qemu", cwd=source)
    tarballs = sorted(source.glob("qemu_*.orig.tar.*"))
    if not tarballs:
        raise SystemExit(f"arm64 set-up: no qemu source tarball in {source}")
    with tarfile.open(tarballs[0]) as tar:
        member = next((m for m in tar if m.name.endswith("include/qemu/qemu-plugin.h")), None)
        if member is None:
            raise SystemExit(f"arm64 set-up: {tarballs[0].name} has no include/qemu/qemu-plugin.h")
        include.mkdir(parents=True, exist_ok=True)
        header.write_bytes(tar.extractfile(member).read())
    shutil.rmtree(source)  # 70 MB of source for one header
    return include


def counting_plugins(apt: PrivateApt) -> None:
    """insn_count.c against qemu 10's header (the counting emulator) and qemu 7.2's (the cross-check one)."""
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:16]
    for plugin, include in ((PLUGIN, lambda: ROOT / "plugin" / "include-qemu10"),
                            (target.CROSS_CHECK_PLUGIN, lambda: plugin_header_qemu7(apt))):
        stamp = plugin.with_suffix(".source")
        if plugin.is_file() and stamp.is_file() and stamp.read_text() == digest:
            continue
        glib = run(["pkg-config", "--cflags", "glib-2.0"]).stdout.split()
        log.info("building the instruction-counting plugin %s", plugin.name)
        partial = plugin.with_suffix(".partial.so")
        run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", f"-I{include()}", *glib, str(PLUGIN_SOURCE),
             "-o", str(partial)])
        partial.rename(plugin)
        stamp.write_text(digest)


# ---- 6. self-check and record ----------------------------------------------------------------

def self_check(pins: dict[str, str]) -> dict:
    from runtimes.arm64.runner import emulator_command, guest_environment

    emulators = {role: run([str(binary), "--version"]).stdout.splitlines()[0].strip()
                 for role, binary in (("verify", target.FAST_QEMU), ("count", target.COUNTING_QEMU),
                                      ("cross-check", target.CROSS_CHECK_QEMU))}
    emulators["count"] += " (built here with plugins)"
    found: dict[str, str] = {}
    for cpu in CPU_MODELS:
        for role in ("verify", "count", "cross-check"):
            if role == "cross-check" and not cpu.cross_checked:
                continue
            log.info("self-check on %s (%s emulator)", cpu.qemu_cpu, role)
            result = run([*emulator_command(cpu, emulator=role), "--self-check"], timeout=300,
                         env=guest_environment(ROOT))
            found = json.loads(result.stdout.strip().splitlines()[-1])
            for name in GUEST_WHEELS:
                if found["packages"].get(name) != pins[name]:
                    raise SystemExit(f"arm64 set-up: {name} on {cpu.qemu_cpu} is {found['packages'].get(name)}, "
                                     f"expected {pins[name]}")
    return {"emulators": emulators, "python": found["python"], "packages": found["packages"]}


def set_up() -> None:
    host_tools()
    fast_emulator()
    counting_emulator()
    apt = private_apt()
    guest_system(apt)
    pins = guest_wheels()
    cpu_roots()
    counting_plugins(apt)
    record = self_check(pins)
    target.TARGET_RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    log.info("arm64 target ready in %s: %s; Python %s; %s", ROOT, " / ".join(record["emulators"].values()),
             record["python"],
             ", ".join(f"{k} {v}" for k, v in record["packages"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    set_up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
