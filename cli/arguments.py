"""Argument types and defaults more than one command shares."""

from __future__ import annotations

import argparse

from models.spec import REGISTRY


def variant(name: str) -> str:
    if name.upper() not in REGISTRY:
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}; choose from {', '.join(REGISTRY)}")
    return name.upper()


def arm64_timeout() -> float:
    from runtimes.arm64.runner import DEFAULT_TIMEOUT_S

    return DEFAULT_TIMEOUT_S
