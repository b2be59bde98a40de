"""The lock (requirements/lock.txt; docs/development.md, "Dependencies") agrees with pyproject.toml's exact
pins, names every package with hashes, and is what the venv running the tests holds. Reads files only: no
index, no network."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
BOOTSTRAP = REPO / "requirements" / "bootstrap.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, sha256 hashes), from pip-compile's `name==version \\ --hash=sha256:...` entries."""
    entries: dict[str, tuple[str, set[str]]] = {}
    name = None
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            name = normalized(match[1])
            assert name not in entries, f"{path.name}: {name} twice"
            entries[name] = (match[2].rstrip("\\").strip(), set())
        elif line.startswith("    --hash=sha256:") and name is not None:
            entries[name][1].add(line.split("sha256:")[1].rstrip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{path.name}: a line the lock's format does not have: {line!r}")
    return entries


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name, sep, version = requirement.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version), (
            f"pyproject.toml: {requirement!r} is not an exact pin (name==version), which the lock relies on"
        )
        pins[normalized(name)] = version
    return pins


def test_every_direct_pin_is_in_the_lock_at_its_version():
    lock = read_lock(LOCK)
    for name, version in pyproject_pins().items():
        assert name in lock, f"{name} is pinned in pyproject.toml but not in {LOCK.name}: run `make lock`"
        locked = lock[name][0]
        # a local label is the build the pin resolves to here (torch 2.13.0+cpu from /opt/wheels)
        assert locked.split("+")[0] == version, f"{name}: pyproject.toml {version}, lock {locked}: run `make lock`"


def test_every_locked_package_has_hashes_and_the_bootstrap_agrees():
    lock = read_lock(LOCK)
    assert len(lock) > 50, "the lock names the transitive packages too"
    assert not [name for name, (_, hashes) in lock.items() if not hashes]
    assert {"pip", "setuptools", "wheel"} <= lock.keys(), "the installers are locked too (--allow-unsafe)"
    for name, (version, hashes) in read_lock(BOOTSTRAP).items():
        assert name in lock and lock[name][0] == version, f"bootstrap.txt {name}=={version} is not in lock.txt"
        assert hashes <= lock[name][1], f"bootstrap.txt {name}: hashes lock.txt does not have"


def test_the_venv_holds_the_locked_set():
    """The venv the tests run in (made by `make install`) has every locked package at its locked version: a venv
    set up before the lock last changed and not reinstalled fails here."""
    installed = {normalized(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, (version, _) in read_lock(LOCK).items()
             if installed.get(name) != version}
    assert not wrong, f"locked version, installed version: {wrong} (run `make install`)"
