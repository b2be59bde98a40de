"""Ctrl-C that is never lost and never lands inside a library while it loads.

Python turns SIGINT into a KeyboardInterrupt at the next bytecode, wherever that is:

- inside an import of PyTorch or TensorFlow, often the middle of a native extension's initialisation:
  the library is left half-loaded and the process may die of it on its way out (exit -2 after a
  traceback instead of the promised one-line message and 130, measured in the first second). Imports
  write nothing the user keeps, so inside :func:`held` a Ctrl-C waits for the block to finish
  (~3 s for TensorFlow) and is raised then;
- inside a hook where Python only prints "Exception ignored" and goes on (at-fork hooks, ``__del__``,
  weakref callbacks): the interrupt is gone, and an export ran on to publish and exit 0 (measured:
  Ctrl-C during the fork of a side stage). The command line's handler (:func:`install`) therefore
  also remembers it, and :func:`raise_if_received` before anything irreversible raises it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_received = False


def _on_ctrl_c(_signum: int, _frame: object) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def install() -> None:
    """The process's Ctrl-C handler: Python's own (KeyboardInterrupt), remembered. For the command line."""
    signal.signal(signal.SIGINT, _on_ctrl_c)


def raise_if_received() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came, even one that a hook swallowed. Before publishing."""
    if _received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT for the block; at its end, a Ctrl-C that came goes to the handler held back.

    Only the main thread can set handlers; elsewhere, or where SIGINT is ignored or left to the
    system, the block runs as is.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        previous(signal.SIGINT, None)
