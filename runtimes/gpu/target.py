"""The software GPU the accelerator runs on, and the folder that holds its set-up (`make gpu`).

LiteRT's GPU accelerator (``libLiteRtWebGpuAccelerator.so`` in the ai-edge-litert wheel) reaches the
GPU through Dawn's Vulkan backend. This machine has no GPU; Mesa's lavapipe is a Vulkan device on the
CPU (LLVM-compiled shaders). Debian 12's own lavapipe (Mesa 22.3) is refused by Dawn ("Vulkan
shaderUniform*ArrayDynamicIndexing required ... No adapters found": it lacks
``shaderSampledImageArrayDynamicIndexing``); Mesa 25.0.7 from bookworm-backports is accepted. So:

- system-wide, Debian 12's own packages only: the Vulkan loader (``libvulkan1``), ``vulkan-tools``
  (``vulkaninfo``: the device's name for the record) and ``mesa-vulkan-drivers`` (for the libraries
  the backported lavapipe links against: LLVM 15, xcb, wayland);
- under ``artifacts/cache/gpu``: the backported ``mesa-vulkan-drivers`` with the newer ``libdrm2`` /
  ``libdrm-amdgpu1`` it needs, unpacked (not installed), and an ICD file naming that lavapipe by
  absolute path.

A process sees the device only if its environment says so before it starts (the dynamic loader reads
``LD_LIBRARY_PATH`` once): :func:`environment` is what the runner gives its worker processes.
"""

from __future__ import annotations

import ctypes.util
import json
import os
from dataclasses import dataclass

from common.errors import RuntimeUnavailableError
from common.paths import CACHE_DIR
from runtimes.versions import version_of

ROOT = CACHE_DIR / "gpu"
MESA = ROOT / "mesa"  # the backported Mesa Vulkan drivers and libdrm, unpacked
LIBRARY_DIR = MESA / "usr" / "lib" / "x86_64-linux-gnu"
ICD_FILE = ROOT / "lvp_icd.json"  # lavapipe's ICD file, its library_path made absolute
RUNTIME_DIR = ROOT / "xdg-runtime"  # XDG_RUNTIME_DIR (Mesa complains on stderr without one)
TARGET_RECORD = ROOT / "target.json"  # written last by the set-up: what is installed, for the manifest
#: Debian 12's own packages, installed system-wide (module docstring).
SYSTEM_PACKAGES = ("libvulkan1", "mesa-vulkan-drivers", "vulkan-tools")
#: From bookworm-backports, unpacked under MESA: the lavapipe Dawn accepts and the libdrm it links against.
BACKPORTED_PACKAGES = ("mesa-vulkan-drivers", "libdrm2", "libdrm-amdgpu1")
#: The package whose GPU accelerator runs the files; the record is stale when its version changes.
ACCELERATOR_PACKAGE = "ai-edge-litert"
SETUP_HINT = ("run `make gpu` (installs Debian's Vulkan loader, unpacks Mesa's lavapipe from bookworm-backports "
              "into artifacts/cache/gpu; once)")


@dataclass(frozen=True)
class TargetRecord:
    """What the set-up installed and found (read back from ``target.json``)."""

    mesa: str  # the backported mesa-vulkan-drivers' Debian version, "25.0.7-2~bpo12+1"
    device: str  # Vulkan's deviceName, "llvmpipe (LLVM 15.0.6, 256 bits)"
    driver: str  # Vulkan's driverInfo, "Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)"
    vulkan_loader: str  # Debian's libvulkan1 version
    packages: dict[str, str]  # {"ai-edge-litert": "2.3.0"}

    @property
    def mesa_release(self) -> str:
        """"25.0.7" from "25.0.7-2~bpo12+1"."""
        return self.mesa.split("-")[0].split("~")[0]

    def to_json(self) -> dict:
        return {"mesa": self.mesa, "device": self.device, "driver": self.driver,
                "vulkan_loader": self.vulkan_loader, "packages": dict(self.packages)}


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the software Vulkan device made the only one:
    the ICD file, the unpacked libraries first on the library path, a runtime folder."""
    env = dict(os.environ if base is None else base)
    libraries = [str(LIBRARY_DIR), *filter(None, env.get("LD_LIBRARY_PATH", "").split(":"))]
    env.update({"VK_ICD_FILENAMES": str(ICD_FILE), "VK_DRIVER_FILES": str(ICD_FILE),
                "LD_LIBRARY_PATH": ":".join(libraries), "XDG_RUNTIME_DIR": str(RUNTIME_DIR)})
    return env


def vulkan_loader() -> str | None:
    """The Vulkan loader's library name if the dynamic loader finds it (Debian's libvulkan1), else None."""
    return ctypes.util.find_library("vulkan")


def ensure_ready() -> TargetRecord:
    """The installed target, or one clear error naming what is missing and the make target."""
    missing = []
    if vulkan_loader() is None:
        missing.append("the Vulkan loader (Debian package libvulkan1)")
    if not ICD_FILE.is_file() or not LIBRARY_DIR.is_dir():
        missing.append(f"Mesa's lavapipe in {MESA}")
    if not TARGET_RECORD.is_file():
        missing.append(f"the self-checked record {TARGET_RECORD.name} in {ROOT}")
    if missing:
        raise RuntimeUnavailableError(f"GPU target not set up (missing: {'; '.join(missing)}): {SETUP_HINT}")
    data = json.loads(TARGET_RECORD.read_text())
    recorded = data.get("packages", {}).get(ACCELERATOR_PACKAGE)
    if recorded != version_of(ACCELERATOR_PACKAGE):
        raise RuntimeUnavailableError(f"GPU target out of date (self-checked with {ACCELERATOR_PACKAGE} {recorded}, "
                                      f"here {version_of(ACCELERATOR_PACKAGE)}): {SETUP_HINT}")
    return TargetRecord(mesa=data["mesa"], device=data["device"], driver=data["driver"],
                        vulkan_loader=data["vulkan_loader"], packages=dict(data["packages"]))
