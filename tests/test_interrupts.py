"""Ctrl-C never lands inside a library while it loads: it is raised once the import is complete."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from common import interrupts, quiet
from exporters.pipeline.publish import publish

#: A module that is Ctrl-C'd half-way through loading: its last line runs only if the interrupt waits.
_INTERRUPTED_WHILE_LOADING = """
import os, signal, time
os.kill(os.getpid(), signal.SIGINT)
time.sleep(0.05)  # the signal is delivered by now: Python's own handler would raise here
LOADED_TO_THE_END = True
"""


def test_a_ctrl_c_during_an_import_is_raised_after_the_module_has_loaded(tmp_path, monkeypatch):
    (tmp_path / "half_loaded_library.py").write_text(_INTERRUPTED_WHILE_LOADING)
    monkeypatch.syspath_prepend(str(tmp_path))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        quiet.import_quietly("half_loaded_library")
    assert sys.modules["half_loaded_library"].LOADED_TO_THE_END
    assert signal.getsignal(signal.SIGINT) is handler
    sys.modules.pop("half_loaded_library")


def test_without_a_ctrl_c_nothing_is_raised_and_an_error_inside_still_propagates():
    handler = signal.getsignal(signal.SIGINT)
    with interrupts.held():
        pass
    with pytest.raises(ZeroDivisionError), interrupts.held():
        1 / 0  # noqa: B018
    assert signal.getsignal(signal.SIGINT) is handler


class _Swallower:
    """Ctrl-C'd inside ``__del__``, where Python prints "Exception ignored" and drops the KeyboardInterrupt."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)


def test_a_ctrl_c_that_a_hook_swallowed_still_stops_the_publish(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "_received", False)
    handler = signal.getsignal(signal.SIGINT)
    interrupts.install()
    try:
        _Swallower()  # dropped at once: its __del__ swallows the interrupt
    finally:
        signal.signal(signal.SIGINT, handler)
    staging, out = tmp_path / ".out.staging-1", tmp_path / "out"
    for folder, text in ((staging, "new"), (out, "old")):
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
    with pytest.raises(KeyboardInterrupt):
        publish(staging, out, set())
    assert (out / "manifest.json").read_text() == "old"
