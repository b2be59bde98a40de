"""Leaves no trace (docs/development.md, "Where the tool writes"): an export, a verify and a bench, run as a user
runs them with an empty HOME and TMPDIR -- inside a network namespace without network where the machine allows it
-- leave both empty: no ONNX Runtime device id or telemetry store, no Keras or matplotlib settings, no
converter's temporary folders. The same after a rejected artifact, a Ctrl-C and a SIGKILL (whose run folder the
next run removes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import environment, scratch
from common.paths import REPO_ROOT
from models.training import shipped

FORMATS = "onnx,tflite,coreml"  # ONNX Runtime, TensorFlow/Keras and coremltools: each writes somewhere by default


def _offline_prefix() -> list[str]:
    """``unshare -n`` (a network namespace with only loopback, down) where the machine lets us make one."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        ok = False
    return ["unshare", "-n"] if ok else []


OFFLINE = _offline_prefix()


@pytest.fixture()
def empty(tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    # the CLI must make its own settings: none of ours (conftest applies them to this process) is inherited
    env = {k: v for k, v in os.environ.items() if k not in environment.SETTINGS and k not in ("TEMP", "TMP")}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    return home, tmp, env


def _cli(env: dict, *args: str) -> list[str]:
    return [*OFFLINE, sys.executable, "-m", "cli", *args]


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(env, *args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def _contents(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.e2e
@pytest.mark.campaign
def test_export_verify_and_bench_leave_home_and_tmpdir_empty(empty, tmp_path):
    home, tmp, env = empty
    out = tmp_path / "out"
    export = _run(env, "export", "--variant", "XS", "--out", str(out), "--formats", FORMATS)
    assert export.returncode == 0, export.stderr[-2000:]
    verify = _run(env, "verify", str(out))
    assert verify.returncode == 0, verify.stderr[-2000:]
    bench = _run(env, "bench", str(out), "--only", "onnxruntime-simplified", "--warmup", "1",
                 "--min-runs", "3", "--min-seconds", "0", "--repeats", "1")
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert (out / "bench.json").is_file()
    assert _contents(home) == [] and _contents(tmp) == []
    if not OFFLINE:
        print("no network namespace could be made here: run with the network as it is")


def _start_and_wait_for_a_converter_temp_file(env: dict, out: Path, tmp: Path) -> subprocess.Popen:
    """An export, once coremltools has written a temporary package into the run folder."""
    proc = subprocess.Popen(_cli(env, "export", "--variant", "XS", "--out", str(out), "--formats", "coreml"), env=env,
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list(tmp.glob(f"{scratch.PREFIX}*/tmp*.mlpackage")):
        assert proc.poll() is None, f"the export ended before Core ML wrote anything: {proc.stderr.read()[-1000:]}"
        assert time.monotonic() < deadline, "coremltools wrote no temporary package into the run folder"
        time.sleep(0.05)
    return proc


@pytest.mark.e2e
@pytest.mark.campaign
def test_a_rejected_an_interrupted_and_a_killed_export_leave_nothing_behind(empty, tmp_path):
    home, tmp, env = empty
    # a rejected artifact: a budget no fp16 file can meet (exit 3, the fp32 files published)
    rejected = _run(env, "export", "--variant", "XS", "--out", str(tmp_path / "rejected"), "--formats", "onnx,tflite",
                    "--max-error-px", "1e-6")
    assert rejected.returncode == 3, rejected.stderr[-2000:]
    assert _contents(home) == [] and _contents(tmp) == []

    interrupted = _start_and_wait_for_a_converter_temp_file(env, tmp_path / "interrupted", tmp)
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=120) == 130
    assert _contents(home) == [] and _contents(tmp) == []

    killed = _start_and_wait_for_a_converter_temp_file(env, tmp_path / "killed", tmp)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    time.sleep(1)  # the forked Core ML stage dies with its parent (PR_SET_PDEATHSIG)
    left = [p.name for p in tmp.iterdir()]
    assert len(left) == 1 and left[0].startswith(scratch.PREFIX)  # a SIGKILL cannot clean up ...
    after = _run(env, "inspect", str(shipped.shipped_weights("XS")))  # any command: the cheapest
    assert after.returncode == 0, after.stderr[-2000:]
    assert _contents(home) == [] and _contents(tmp) == []  # ... the next run does


def test_a_run_folder_with_a_live_owner_is_left_alone(tmp_path, monkeypatch):
    """Two runs at once: the second must not remove the first one's folder (it holds its lock)."""
    monkeypatch.setattr(scratch.tempfile, "tempdir", str(tmp_path))
    with scratch.run_folder() as first:
        (first / "work").write_text("in use")
        child = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from common import "
                                "scratch; print(len(scratch.clear_leftovers(Path(sys.argv[1]))))", str(tmp_path)],
                               cwd=REPO_ROOT, capture_output=True, text=True)
        assert child.stdout.strip() == "0", child.stderr
        assert (first / "work").is_file()
        dead = tmp_path / f"{scratch.PREFIX}999999999-x"
        dead.mkdir()
        (dead / scratch.OWNER).touch()  # a lock file nobody holds: its run was killed
        assert scratch.clear_leftovers(tmp_path) == [dead] and first.is_dir()
    assert not first.exists()
