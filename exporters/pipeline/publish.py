"""Putting an export into OUT: all at once, one export per OUT at a time, nothing left behind.

Next to OUT, in its parent folder:

- ``.<name>.lock``: held (``flock``) by the export writing into OUT, with its pid inside. The kernel
  drops the lock when that process ends, even by SIGKILL, so a lock left by a killed export is
  simply taken over; a second export while one runs is refused at once, naming the holder.
- ``.<name>.staging-<pid>-*``: the new export, built and judged there, manifest written last.
- ``.<name>.old-<pid>-*``: OUT's previous content, for the moment after the swap.

Publishing is one directory entry: ``renameat2(RENAME_EXCHANGE)`` swaps the complete staging folder
and OUT atomically (Linux 3.15+ on ext4, xfs, btrfs, tmpfs, overlayfs...). Killed before it, OUT is
as it was; after it, OUT is the new export, complete. Files the user keeps in OUT (a bench report,
notes) and that neither export lists are carried over before the swap (hard links). Where the
filesystem cannot exchange, OUT is renamed aside and staging into its place; a kill between the two
leaves no OUT, and the next export or ``convnextpose verify`` puts back the complete one. Either
way the next export (or ``verify``) removes the leftover folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common import interrupts
from common.errors import ExportError
from common.files import default_dir_mode, default_file_mode
from judging.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: Environment variable the crash-consistency campaign sets to kill an export at a named point.
CRASH_AT_ENV = "CONVNEXTPOSE_CRASH_AT"


def crash_point(name: str) -> None:
    """Test seam: SIGKILL this process at ``name`` when the campaign asks for it (docs/reliability.md)."""
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _sibling(out: Path, kind: str) -> str:
    return f".{out.name}.{kind}"


def check_out(out: Path) -> None:
    """Refuse an OUT that cannot take an export, before any work: a file, a read-only folder or parent."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    for folder in (out, out.parent):
        if folder.is_dir() and not (folder.stat().st_mode & stat.S_IWUSR and os.access(folder, os.W_OK)):
            raise ExportError(f"{folder} is read-only (mode {stat.filemode(folder.stat().st_mode)}): the export "
                              "cannot be written there")


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """One export per OUT: a second one is refused at once, naming the running one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / _sibling(out, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, default_file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ExportError(f"another export is writing {out} right now (pid {holder}); wait for it to finish, "
                              "or export into another folder") from None
        previous = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if previous:
            log.debug("took over the lock of %s from pid %s, which is no longer running", out, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def clear_leftovers(out: Path) -> list[Path]:
    """Remove what killed exports left (call with the lock held); finish a half-done fallback swap."""
    removed = []
    staging = sorted(out.parent.glob(f"{_sibling(out, 'staging')}-*"))
    old = sorted(out.parent.glob(f"{_sibling(out, 'old')}-*"))
    if not out.exists():  # killed between the fallback's two renames: put the complete export back
        complete = [p for p in staging if (p / MANIFEST_NAME).is_file()] or [p for p in old if p.is_dir()]
        if complete:
            os.rename(complete[-1], out)
            log.warning("restored %s from %s (an export was killed while publishing)", out, complete[-1].name)
    leftovers = [p for p in [*staging, *old] if p.exists()]
    leftovers += [p for p in out.glob(".staging-*")] if out.is_dir() else []  # the layout before this one
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.warning("removed %d folder(s) left by an interrupted export: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


def tidy(out: Path) -> list[Path]:
    """Clear what interrupted exports left beside OUT, unless an export is running into it now."""
    if not out.parent.is_dir():
        return []
    try:
        with out_lock(out):
            return clear_leftovers(out)
    except ExportError:  # an export holds the lock: its staging folder is not a leftover
        return []


def new_staging(out: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f"{_sibling(out, 'staging')}-{os.getpid()}-", dir=out.parent))
    os.chmod(staging, default_dir_mode())  # mkdtemp's 0700 would become OUT's mode after the swap
    return staging


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directory entries; False where the system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _carry_over(out: Path, staging: Path, previous: set[str]) -> None:
    """Entries of OUT that no export lists (the user's own files, bench reports) go along into staging."""
    for entry in out.iterdir():
        if entry.name in previous or entry.name == MANIFEST_NAME or (staging / entry.name).exists() \
                or entry.name.startswith(".staging-"):
            continue
        target = staging / entry.name
        try:
            if entry.is_dir():
                shutil.copytree(entry, target, copy_function=os.link, symlinks=True)
            else:
                os.link(entry, target)
        except OSError:  # another filesystem or links not allowed: copy
            shutil.copytree(entry, target, symlinks=True) if entry.is_dir() else shutil.copy2(entry, target)


def publish(staging: Path, out: Path, previous: set[str]) -> None:
    """Make the complete export in ``staging`` OUT's content in one step (see the module docstring).
    ``previous``: what the old manifest listed (not carried over). A Ctrl-C that came before, even one a
    hook swallowed, stops it here; one that comes during it waits until OUT is complete."""
    interrupts.raise_if_received()
    crash_point("before-publish")
    with interrupts.held():
        _swap_in(staging, out, previous)


def _swap_in(staging: Path, out: Path, previous: set[str]) -> None:
    if not out.exists():
        os.rename(staging, out)
        crash_point("after-publish")
        return
    _carry_over(out, staging, previous)
    if _exchange(staging, out):
        crash_point("after-swap")
        shutil.rmtree(staging, ignore_errors=True)  # now the previous content
        return
    aside = out.parent / f"{_sibling(out, 'old')}-{os.getpid()}"
    os.rename(out, aside)
    crash_point("between-renames")
    os.rename(staging, out)
    shutil.rmtree(aside, ignore_errors=True)
