"""One temporary folder per run, owned by the run and removed with it.

Converters write temporary files of their own: coremltools leaves its ``tmp*.mlpackage`` folders
in ``TMPDIR`` after every conversion (three per export, 18 MB for XS), TensorFlow and ONNX Runtime
use it too. A run (an export, a bench, a verify) therefore points ``TMPDIR`` -- and Python's
``tempfile`` -- at a folder of its own, ``$TMPDIR/convnextpose-run-<pid>-*``, which every library and
every child process (forked stages, bench workers) inherits, and removes it when the run ends: on
success, on an error and on Ctrl-C. A run killed with SIGKILL cannot clean up; its folder is removed at
the start of the next run. The run holds an ``flock`` on the folder's ``.owner`` file for as long as it
lives (the kernel drops it when the process dies, however it dies), so a folder whose lock can be
taken has no live owner and is a leftover, whatever its age.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "convnextpose-run-"
OWNER = ".owner"
_TEMP_VARIABLES = ("TMPDIR", "TEMP", "TMP")


def _has_live_owner(folder: Path) -> bool:
    try:
        fd = os.open(folder / OWNER, os.O_RDWR)
    except FileNotFoundError:  # killed between creating the folder and locking it: the pid in the name says
        pid = folder.name[len(PREFIX):].split("-", 1)[0]
        return pid.isdigit() and Path(f"/proc/{pid}").exists()
    except OSError:
        return True  # not ours to judge (another user's folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def clear_leftovers(base: Path) -> list[Path]:
    """Remove the run folders in ``base`` that no live run owns (left by a SIGKILL); returns them."""
    removed = []
    for folder in sorted(base.glob(f"{PREFIX}*")):
        if folder.is_dir() and not folder.is_symlink() and not _has_live_owner(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d temporary folder(s) left by a killed run: %s", len(removed),
                 ", ".join(f.name for f in removed))
    return removed


@contextlib.contextmanager
def run_folder() -> Iterator[Path]:
    """A temporary folder for this run: TMPDIR (and ``tempfile``) point into it until the block ends,
    then it is removed with everything any library left there."""
    base = Path(tempfile.gettempdir())
    clear_leftovers(base)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    fd = os.open(folder / OWNER, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until the run ends or dies
    saved_env = {name: os.environ.get(name) for name in _TEMP_VARIABLES}
    saved_tempdir = tempfile.tempdir
    owner = os.getpid()
    os.environ.update({name: str(folder) for name in _TEMP_VARIABLES})
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        if os.getpid() == owner:  # a forked child leaving the block (it ends with os._exit) removes nothing
            tempfile.tempdir = saved_tempdir
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(folder, ignore_errors=True)
            os.close(fd)
