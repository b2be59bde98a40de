"""Debian packages for the targets' set-ups (`make arm64`, `make gpu`): the one place apt is driven.

Two ways in, and only two. A package of this Debian release that the machine itself needs (qemu-user,
the Vulkan loader) is installed system-wide with apt-get, when run as root; otherwise the set-up stops
with the command to run. Anything else -- another architecture's packages, another release's, a
backport -- is fetched through a *private* apt configuration (its own sources list, package lists and
archive folders under the target's cache folder; the system's apt sources, architectures and state are
never touched) and unpacked with ``dpkg-deb -x`` into the cache, never installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class SetupFailed(SystemExit):
    """A set-up step failed: the message names the target, the command and the tail of its output.
    A SystemExit, so ``python -m runtimes.<target>.setup`` ends with that message and no traceback."""


def run(cmd: list[str], who: str, **kwargs) -> subprocess.CompletedProcess:
    """``cmd``, its output captured; a failure stops the set-up (``who``: "arm64 set-up") with its last lines."""
    log.debug("$ %s", " ".join(map(str, cmd)))
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise SetupFailed(f"{who}: `{' '.join(map(str, cmd[:4]))} ...` failed ({result.returncode}):\n{tail}")
    return result


def installed_version(package: str) -> str | None:
    """The version of a Debian package installed on this machine, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    found = subprocess.run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", package], capture_output=True,
                           text=True)
    status, _, version = found.stdout.partition("\t")
    return version if found.returncode == 0 and status.endswith(" installed") else None


def install_system_packages(packages: list[str], who: str, make_target: str) -> None:
    """Debian's own ``packages`` installed with apt-get (as root); not root: stop, naming the command."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise SetupFailed(f"{who} needs Debian packages {' '.join(packages)}: "
                          f"sudo apt-get install {' '.join(packages)}, then run `make {make_target}` again")
    log.info("installing %s (apt-get)", " ".join(packages))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], who, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], who, env=env)


def apt_options(apt: Path, arch: str = "arm64") -> list[str]:
    """apt-get options that confine it to the private configuration in ``apt``, for ``arch``."""
    return ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures::={arch}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]


def source_lines(arch: str, suites: dict[str, str], kinds: tuple[str, ...] = ("deb",)) -> list[str]:
    """sources.list lines: ``suites`` maps a mirror to its space-separated suites (main only)."""
    return [f"{kind} [arch={arch} signed-by={KEYRING}] {uri} {suite} main"
            for kind in kinds for uri, names in suites.items() for suite in names.split()]


@dataclass(frozen=True)
class PrivateApt:
    """A private apt configuration in ``folder`` for ``arch``; ``who`` names the set-up in errors."""

    folder: Path
    arch: str
    who: str

    def options(self) -> list[str]:
        return apt_options(self.folder, self.arch)

    def apt_get(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run(["apt-get", *self.options(), *args], self.who, cwd=cwd)

    def download(self, packages: list[str], into: Path) -> list[Path]:
        """``apt-get download`` of ``packages`` (name, name:arch or name/suite) into ``into``: the .deb files."""
        into.mkdir(parents=True, exist_ok=True)
        before = set(into.glob("*.deb"))
        self.apt_get("download", *packages, cwd=into)
        return sorted(set(into.glob("*.deb")) - before) or sorted(into.glob("*.deb"))


def private_apt(folder: Path, arch: str, lines: list[str], who: str) -> PrivateApt:
    """The private configuration in ``folder`` with these sources; its package lists are read (``apt-get
    update``) when there are none yet or the sources changed."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    sources = folder / "sources.list"
    text = "\n".join(lines) + "\n"
    changed = not sources.is_file() or sources.read_text() != text
    sources.write_text(text)
    apt = PrivateApt(folder, arch, who)
    if changed or not any((folder / "lists").glob("*Packages*")):
        log.info("reading Debian's package lists (%s; private apt state in %s)", arch, folder)
        apt.apt_get("update", "-qq")
    return apt


def deb_version(deb: Path, who: str) -> str:
    """The Version field of a .deb file."""
    return run(["dpkg-deb", "-f", str(deb), "Version"], who).stdout.strip()


def unpack(debs: list[Path], into: Path, who: str) -> None:
    """Every .deb unpacked (``dpkg-deb -x``, nothing installed) into ``into``, replacing it whole: into a
    sibling ``.partial`` folder first, renamed when complete (an interrupted set-up leaves no half folder)."""
    staging = into.with_name(into.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for deb in debs:
        run(["dpkg-deb", "-x", str(deb), str(staging)], who)
    shutil.rmtree(into, ignore_errors=True)
    staging.rename(into)
