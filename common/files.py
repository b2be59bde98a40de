"""File helpers: digests and atomic writes (a reader never sees a half-written file)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def file_digest(path: Path) -> str:
    """sha256 of one file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def path_digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder (an .mlpackage): its files in sorted order, each
    relative name followed by its bytes, in one stream."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size, file_digest(path)
    digest, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_file_mode() -> int:
    """The permissions the user's umask gives a new file (mkstemp's 0600 would hide it from others)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    return 0o777 & ~current_umask()


def write_atomic(out: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` to a temporary name in the same folder, then rename: never a half-written file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_atomic(src: Path, out: Path) -> None:
    write_atomic(out, lambda tmp: shutil.copyfile(src, tmp))


def write_json_atomic(data: dict[str, Any], out: Path) -> None:
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(out, lambda tmp: Path(tmp).write_text(text))
