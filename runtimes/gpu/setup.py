"""Build the GPU target (`make gpu` runs ``python -m runtimes.gpu.setup``). Idempotent.

Steps, each skipped when its result is already there:
1. Debian 12's own ``libvulkan1``, ``mesa-vulkan-drivers`` and ``vulkan-tools``, with apt-get when run
   as root (runtimes/gpu/target.py says why each);
2. the backported ``mesa-vulkan-drivers`` (Mesa 25.0.7's lavapipe), ``libdrm2`` and ``libdrm-amdgpu1``
   from bookworm-backports, fetched with a private apt configuration (runtimes/debian.py) and unpacked
   under ``artifacts/cache/gpu/mesa``; only lavapipe and libdrm are kept;
3. lavapipe's ICD file, its ``library_path`` made absolute (rewritten every run: the project may move);
4. a self-check, every run: ``vulkaninfo`` sees the one software device, and a two-op .tflite
   (runtimes/gpu/probes.py; made once with TensorFlow's converter) runs on the GPU accelerator in a
   worker process, fully accelerated, with the known answer and the CPU's; ``target.json`` last.

Measured here (2 cores shared with other jobs): from nothing 23 s, of which apt-get update and install of the
three Debian packages ~11 s (the cache folder alone: 12 s -- backports' lists and packages, TensorFlow
converting the probe, the self-check); then 4 s (the self-check alone). The folder takes 13 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from common import environment, quiet
from runtimes import debian, litert
from runtimes.debian import DEBIAN_MIRROR
from runtimes.gpu import target
from runtimes.gpu.target import BACKPORTED_PACKAGES, ICD_FILE, LIBRARY_DIR, MESA, ROOT, TargetRecord
from runtimes.versions import version_of

log = logging.getLogger("gpu-setup")

WHO = "GPU set-up"
BACKPORTS = "bookworm-backports"
LAVAPIPE = "libvulkan_lvp.so"
#: Where the unpacked mesa-vulkan-drivers keeps the drivers' ICD files (lavapipe's: lvp_icd.json).
UNPACKED_ICDS = MESA / "usr" / "share" / "vulkan" / "icd.d"
STAMP = MESA / ".packages.json"  # {package: version} of what is unpacked
SELF_CHECK_DIR = ROOT / "self-check"


# ---- 1. Debian's own packages, system-wide -------------------------------------------------------

def system_packages() -> str:
    """Installs what is missing; returns the Vulkan loader's version."""
    debian.install_system_packages([p for p in target.SYSTEM_PACKAGES if debian.installed_version(p) is None],
                                   WHO, "gpu")
    return debian.installed_version("libvulkan1") or "?"


# ---- 2. the backported lavapipe, unpacked -------------------------------------------------------

def backported_mesa() -> dict[str, str]:
    """{package: version} of the unpacked backports (fetched and unpacked once)."""
    if STAMP.is_file() and (LIBRARY_DIR / LAVAPIPE).is_file() and _lavapipe_icd() is not None:
        return json.loads(STAMP.read_text())
    sources = debian.source_lines("amd64", {DEBIAN_MIRROR: BACKPORTS})
    apt = debian.private_apt(ROOT / "apt", "amd64", sources, WHO)
    debs = apt.folder / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    log.info("fetching %s from %s (unpacked into %s, not installed)", ", ".join(BACKPORTED_PACKAGES), BACKPORTS, MESA)
    files = apt.download([f"{p}/{BACKPORTS}" for p in BACKPORTED_PACKAGES], debs)
    versions = {f.name.split("_")[0]: debian.deb_version(f, WHO) for f in files}
    debian.unpack(files, MESA, WHO)
    _keep_lavapipe_only()
    shutil.rmtree(debs)
    STAMP.write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    return versions


def _keep_lavapipe_only() -> None:
    """The other drivers in the package (radeon, intel, nouveau, ...) are for hardware this is not."""
    for path in LIBRARY_DIR.glob("libvulkan_*.so"):
        if path.name != LAVAPIPE:
            path.unlink()
    for path in UNPACKED_ICDS.glob("*.json"):
        if json.loads(path.read_text())["ICD"]["library_path"].rpartition("/")[2] != LAVAPIPE:
            path.unlink()


def _lavapipe_icd() -> Path | None:
    found = sorted(UNPACKED_ICDS.glob("lvp_icd*.json"))
    return found[0] if found else None


# ---- 3. the ICD file -----------------------------------------------------------------------------

def icd_file() -> None:
    unpacked = _lavapipe_icd()
    if unpacked is None:
        raise debian.SetupFailed(f"{WHO}: no lavapipe ICD file (lvp_icd*.json) in {UNPACKED_ICDS}")
    icd = json.loads(unpacked.read_text())
    icd["ICD"]["library_path"] = str((LIBRARY_DIR / LAVAPIPE).resolve())
    ICD_FILE.write_text(json.dumps(icd, indent=4) + "\n")
    target.RUNTIME_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)


# ---- 4. self-check and record --------------------------------------------------------------------

def vulkan_device() -> tuple[str, str]:
    """(deviceName, driverInfo) of the one device vulkaninfo finds with the target's environment."""
    summary = debian.run(["vulkaninfo", "--summary"], WHO, env=target.environment(), timeout=120).stdout
    fields: dict[str, list[str]] = {}
    for line in summary.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    names = fields.get("deviceName", [])
    if len(names) != 1 or "PHYSICAL_DEVICE_TYPE_CPU" not in fields.get("deviceType", [""])[0]:
        raise debian.SetupFailed(f"{WHO}: expected one software (CPU) Vulkan device, vulkaninfo found "
                                 f"{names or 'none'} ({fields.get('deviceType')})")
    return names[0], fields.get("driverInfo", ["?"])[0]


def self_check(record: TargetRecord) -> None:
    """The two-op probe on the GPU accelerator: every op taken, the known answer, the CPU's answer."""
    from runtimes.gpu import probes
    from runtimes.gpu.runner import GpuJob, run_job

    path = probes.AFFINE.write(SELF_CHECK_DIR / "affine.tflite")
    x = probes.affine_inputs()
    result = run_job(GpuJob(path, layout="NCHW"), x, timeout_s=120, record=record)
    cpu = litert.open_session(path, threads=1, layout="NCHW").run_all(x)
    problems = []
    if not result.fully_accelerated:
        problems.append("the accelerator did not take every op (is_fully_accelerated() is false)")
    if not np.array_equal(result.outputs, probes.AFFINE.expected(x)):
        problems.append(f"wrong answer: {result.outputs.ravel()[:6]} where {probes.AFFINE.expected(x).ravel()[:6]}")
    if not np.array_equal(result.outputs, cpu):
        problems.append("an answer other than LiteRT's CPU path")
    if problems:
        raise debian.SetupFailed(f"{WHO}: self-check on {path.name}: {'; '.join(problems)}")
    log.info("self-check: %s fully accelerated, known answer, %.1f s", path.name, result.seconds)


def set_up() -> TargetRecord:
    loader = system_packages()
    versions = backported_mesa()
    icd_file()
    device, driver = vulkan_device()
    record = TargetRecord(mesa=versions["mesa-vulkan-drivers"], device=device, driver=driver, vulkan_loader=loader,
                          packages={target.ACCELERATOR_PACKAGE: accelerator_version()})
    self_check(record)
    target.TARGET_RECORD.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n")
    log.info("GPU target ready in %s: %s, %s; Vulkan loader %s; %s %s", ROOT, device, driver, loader,
             target.ACCELERATOR_PACKAGE, record.packages[target.ACCELERATOR_PACKAGE])
    return record


def accelerator_version() -> str:
    version = version_of(target.ACCELERATOR_PACKAGE)
    if version == "not installed":
        raise debian.SetupFailed(f"{WHO}: {target.ACCELERATOR_PACKAGE} is not installed here; run `make install`")
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    environment.apply()  # the probe's converter (TensorFlow) writes nothing into HOME
    quiet.configure(args.verbose)
    set_up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
