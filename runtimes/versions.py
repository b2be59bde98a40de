"""Installed package versions, for runtime labels and the manifest."""

from __future__ import annotations

import importlib.metadata


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
