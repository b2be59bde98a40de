"""The reliability campaign (`make robustness`): hundreds of bad inputs, kills at any moment, two exports
at once, a full disk, the same export twice. Prints one table; docs/reliability.md holds it.

Bad inputs run in this process through ``cli.main`` (fast), with a sample re-run as real processes.
Each must end with its expected exit code, a message naming what is wrong, no traceback, and OUT
either untouched (refusal) or a complete export (accepted input). Kills run real export processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.files import path_digest
from common.tables import format_table
from exporters.pipeline.publish import CRASH_AT_ENV
from judging.manifest import MANIFEST_NAME
from models.network import ConvNeXtPose
from robustness.corpus import (
    SMALL,
    Case,
    checkpoint_cases,
    demo_cases,
    export_folder_cases,
    image_cases,
    option_cases,
)

KILL_FORMATS = "onnx,tflite,coreml"
CRASH_POINTS = ("before-publish", "after-swap")
#: `kill_trial`'s moment that is one phase on any machine: the export's staging folder exists.
STAGES = "in its stages"


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    output: str
    traceback: bool
    out_state: str  # "untouched" | "complete export" | "changed" | "n/a"

    @property
    def message_ok(self) -> bool:
        return self.code == 0 or not self.case.message or self.case.message in self.output

    @property
    def ok(self) -> bool:
        out_ok = self.out_state in ("n/a", "untouched" if self.code else "complete export")
        return self.code in self.case.expect and not self.traceback and self.message_ok and out_ok


def snapshot(path: Path | None) -> object:
    """What a path holds: None (absent), a file's digest, or a folder's files and their digests."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path_digest(path)
    return {str(p.relative_to(path)): path_digest(p) for p in sorted(path.rglob("*")) if p.is_file()}


def complete_export(out: Path) -> bool:
    """OUT holds a manifest and exactly what it lists, each artifact with its recorded sha256."""
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    listed = {a["file"] for a in manifest["artifacts"]} | set(manifest.get("extras", []))
    present = {p.name for p in out.iterdir()} - {MANIFEST_NAME}
    intact = all(path_digest(out / a["file"]) == (a["bytes"], a["sha256"]) for a in manifest["artifacts"]
                 if (out / a["file"]).exists())
    return listed <= present and intact


def run_case(case: Case) -> Outcome:
    """One case in this process, through the CLI's own entry point."""
    from cli import main

    before = snapshot(case.out)
    buffer = io.StringIO()
    crashed = False
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = main(list(case.argv))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 -- exactly what the campaign counts
            import traceback

            traceback.print_exc()
            code, crashed = -1, True
    output = buffer.getvalue()
    if case.out is None:
        state = "n/a"
    elif snapshot(case.out) == before:
        state = "untouched"
    elif case.out.is_dir() and complete_export(case.out):
        state = "complete export"
    else:
        state = "changed"
    return Outcome(case, code, output, crashed or "Traceback (most recent call last)" in output, state)


def run_as_process(case: Case) -> Outcome:
    """The same case as a real `convnextpose` process: exit code and stderr as a user sees them."""
    before = snapshot(case.out)
    proc = subprocess.run([sys.executable, "-m", "cli", *case.argv], capture_output=True, text=True)
    state = "n/a" if case.out is None else "untouched" if snapshot(case.out) == before else (
        "complete export" if case.out.is_dir() and complete_export(case.out) else "changed")
    return Outcome(case, proc.returncode, proc.stdout + proc.stderr, "Traceback" in proc.stderr, state)


def small_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save({"epoch": 1, "network": {f"module.{k}": v for k, v in ConvNeXtPose(SMALL).state_dict().items()}},
               path)
    return path


def export_args(checkpoint: Path, out: Path, formats: str = "onnx") -> list[str]:
    return ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--formats", formats]


# ---- crash consistency ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KillTrial:
    how: str  # "SIGKILL after 3.2 s" | "crash point after-swap" | "SIGINT after 1.0 s" | "SIGINT in its stages"
    code: int
    state: str  # "old" | "new" | "mixed"
    leftovers_cleared: bool
    said: str = ""  # the end of what the export wrote to stderr: where a wrong ending came from

    @property
    def ok(self) -> bool:
        interrupted_cleanly = not self.how.startswith("SIGINT") or (self.code == 130 and self.state == "old")
        return self.state != "mixed" and self.leftovers_cleared and interrupted_cleanly


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.parent.glob(f".{out.name}.*") if not p.name.endswith(".lock")]


def kill_trial(checkpoint: Path, template: Path, work: Path, delay: float | str | None,
               crash_point: str | None = None, sig: int = signal.SIGKILL, formats: str = KILL_FORMATS) -> KillTrial:
    """Export over a complete OUT and stop it: a signal after ``delay`` s, or once its staging folder exists
    (``delay="in its stages"``: the same phase on any machine), or at ``crash_point``."""
    out = work / "out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(template, out)
    old = snapshot(out)
    env = {**os.environ, **({CRASH_AT_ENV: crash_point} if crash_point else {})}
    proc = subprocess.Popen([sys.executable, "-m", "cli", *export_args(checkpoint, out, formats), "--seed", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    if delay == STAGES:
        deadline = time.monotonic() + 300
        while proc.poll() is None and not list(work.glob(f".{out.name}.staging-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(sig)
    elif delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    state = "old" if snapshot(out) == old else "new" if complete_export(out) else "mixed"
    verify = subprocess.run([sys.executable, "-m", "cli", "verify", str(out)], capture_output=True, text=True)
    if crash_point:
        how = f"crash point {crash_point}"
    else:
        how = f"{signal.Signals(sig).name} {delay if delay == STAGES else f'after {delay:.1f} s'}"
    return KillTrial(how, proc.returncode, state, not _leftovers(out) and verify.returncode == 0
                     and "Traceback" not in err + verify.stderr, err[-800:])


#: The second export of `concurrent_exports`: loads what an export loads, waits until the first export is
#: inside its stages (its staging folder exists), then runs. Its imports (~4 s) are over by then, so it asks
#: for OUT while the first one certainly holds it, however fast the first one's stages have become.
_SECOND_EXPORT = """
import sys, time
from pathlib import Path
import cli
from common import quiet
quiet.configure(False)
quiet.import_quietly("tensorflow")
import exporters.pipeline.export
out, deadline = Path(sys.argv[1]), time.monotonic() + 120
while not list(out.parent.glob(f".{out.name}.staging-*")):
    if time.monotonic() > deadline:
        sys.exit("the first export never reached its stages")
    time.sleep(0.02)
sys.exit(cli.main(sys.argv[2:]))
"""


def concurrent_exports(checkpoint: Path, work: Path) -> str:
    """A second export into the same OUT while one runs: refused at once, the first one unharmed."""
    out = work / "concurrent"
    shutil.rmtree(out, ignore_errors=True)
    second = subprocess.Popen([sys.executable, "-c", _SECOND_EXPORT, str(out), *export_args(checkpoint, out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-m", "cli", *export_args(checkpoint, out, "onnx,tflite,coreml")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, second_err = second.communicate(timeout=300)
        first_err = first.communicate(timeout=300)[1]
    finally:
        for proc in (first, second):
            proc.kill()
    ok = (second.returncode == 2 and "another export is writing" in second_err and first.returncode == 0
          and complete_export(out))
    return (f"{'ok' if ok else 'FAILED'}: second export exit {second.returncode} "
            f"({second_err.strip().splitlines()[-1][:90] if second_err.strip() else ''}); first exit "
            f"{first.returncode}{': ' + first_err.strip().splitlines()[-1][:90] if first.returncode else ''}")


def disk_full(checkpoint: Path, work: Path) -> str:
    """An export into a nearly full filesystem (a small tmpfs; needs root): a clear message, OUT unchanged."""
    mount = work / "small-disk"
    mount.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        return "skipped: cannot mount a small tmpfs here (needs root)"
    try:
        out = mount / "out"
        template = work / "disk-template"
        if not template.exists():
            subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, template)], capture_output=True)
        shutil.copytree(template, out)
        filler = mount / "filler"
        free = shutil.disk_usage(mount).free
        filler.write_bytes(b"\0" * max(0, free - 300_000))
        before = snapshot(out)
        proc = subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, out, "onnx,coreml")],
                              capture_output=True, text=True)
        unchanged = snapshot(out) == before and not _leftovers(out)
        ok = proc.returncode == 2 and "no space left" in proc.stderr and unchanged and "Traceback" not in proc.stderr
        return (f"{'ok' if ok else 'FAILED'}: exit {proc.returncode}, OUT {'unchanged' if unchanged else 'CHANGED'}: "
                f"{proc.stderr.strip().splitlines()[-1][:110] if proc.stderr.strip() else ''}")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def determinism(checkpoint: Path, work: Path, formats: str) -> dict[str, str]:
    """Export the same checkpoint twice: per file, are the bytes identical?"""
    outs = [work / f"twice-{i}" for i in range(2)]
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, out, formats)], capture_output=True,
                       check=True)
    names = sorted({p.name for p in outs[0].iterdir()} | {p.name for p in outs[1].iterdir()})
    same = {name: "yes" if snapshot(outs[0] / name) == snapshot(outs[1] / name) else "no" for name in names}
    if same.get(MANIFEST_NAME) == "no":  # it records how long each stage took
        a, b = (json.loads((out / MANIFEST_NAME).read_text()) for out in outs)
        if {k: v for k, v in a.items() if k != "stage_seconds"} == {k: v for k, v in b.items() if k != "stage_seconds"}:
            same[MANIFEST_NAME] = "yes but stage_seconds (timings)"
    return same


# ---- the campaign --------------------------------------------------------------------------------
def build_corpus(work: Path, seed: int, quick: bool) -> tuple[list[Case], Path]:
    """Every case (or, ``quick``, a few of each family), and the small checkpoint they use."""
    checkpoint = small_checkpoint(work / "small.pth")
    export = work / "good-export"
    if not export.exists():
        # exit 3 is a complete export too: the random weights' fp16 .mlpackage may miss its budget once every sum
        # is accumulated in fp16 (their flat heatmaps overflow it); the files published are what the cases use
        done = subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, export, "onnx,coreml")],
                              capture_output=True, text=True)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"the corpus's export failed ({done.returncode}): {done.stderr[-500:]}")
    cases = [*checkpoint_cases(work / "checkpoints", seed),
             *image_cases(work / "images", checkpoint, work / "outs", seed), *demo_cases(work / "images", export),
             *export_folder_cases(work / "exports", export), *option_cases(work / "options", checkpoint)]
    if quick:
        rng = np.random.default_rng(seed)
        by_family: dict[str, list[Case]] = {}
        for case in cases:
            by_family.setdefault(case.family, []).append(case)
        picked = []
        for family, members in by_family.items():
            keep = 6 if family != "export folder" else 4
            picked += [members[i] for i in sorted(rng.choice(len(members), min(keep, len(members)), replace=False))]
        cases = picked
    return cases, checkpoint


def input_table(outcomes: list[Outcome]) -> str:
    rows = []
    for family in dict.fromkeys(o.case.family for o in outcomes):
        mine = [o for o in outcomes if o.case.family == family]
        rows.append((family, len(mine), sum(o.code == 2 and o.ok for o in mine),
                     sum(o.code == 0 and o.ok for o in mine), sum(o.traceback for o in mine),
                     sum(o.out_state == "changed" for o in mine), sum(not o.ok for o in mine)))
    totals = [sum(r[i] for r in rows) for i in range(1, 7)]
    rows.append(("all", *totals))
    return format_table(("inputs", "tried", "refused, clear message", "accepted (documented)", "tracebacks",
                         "partial outputs", "wrong outcome"), rows, markdown=True)


def run_campaign(work: Path, seed: int = 0, quick: bool = False, kills: int = 20) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cases, checkpoint = build_corpus(work, seed, quick)
    outcomes = [run_case(c) for c in cases]
    sample = [c for c in cases if c.family == "checkpoint"][:2] + [c for c in cases if c.family == "option"][:2]
    outcomes += [run_as_process(c) for c in sample]
    template = work / "kill-template"
    if not template.exists():
        subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, template, KILL_FORMATS)],
                       capture_output=True, check=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *export_args(checkpoint, work / "timed", KILL_FORMATS)],
                   capture_output=True, check=True)
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    delays = sorted(rng.uniform(0.3, duration, max(1, kills - len(CRASH_POINTS) - 2)))
    trials = [kill_trial(checkpoint, template, work / "kill", d) for d in delays]
    trials += [kill_trial(checkpoint, template, work / "kill", None, point) for point in CRASH_POINTS]
    # Ctrl-C while it works (not after it finished: Python cannot turn a late SIGINT into an exit code)
    trials += [kill_trial(checkpoint, template, work / "kill", when, sig=signal.SIGINT)
               for when in (float(rng.uniform(0.3, 0.6 * duration)), STAGES)]
    return {
        "outcomes": outcomes,
        "kills": trials,
        "export_seconds": duration,
        "concurrent": concurrent_exports(checkpoint, work),
        "disk_full": disk_full(checkpoint, work),
        "determinism": determinism(checkpoint, work, "onnx,tflite,tflite-int8,coreml" if not quick else "onnx"),
    }


def report(result: dict) -> str:
    outcomes, trials = result["outcomes"], result["kills"]
    lines = ["## Bad inputs", "", input_table(outcomes), ""]
    wrong = [o for o in outcomes if not o.ok]
    lines += [f"- WRONG: {o.case.family} / {o.case.name}: exit {o.code}, OUT {o.out_state}, "
              f"{'traceback, ' if o.traceback else ''}{_last_line(o.output)}" for o in wrong]
    states = Counter(t.state for t in trials)
    lines += ["", f"## Kills ({len(trials)} trials over a {result['export_seconds']:.0f}-s export)", "",
              format_table(("how", "exit", "OUT afterwards", "leftovers cleared by verify"),
                           [(t.how, t.code, t.state, "yes" if t.leftovers_cleared else "NO") for t in trials],
                           markdown=True), "",
              f"OUT as it was: {states['old']}, the new export complete: {states['new']}, mixed: {states['mixed']}"]
    lines += [f"- WRONG: {t.how}: exit {t.code}, OUT {t.state}, {_last_line(t.said)}" for t in trials if not t.ok]
    lines += ["", f"## Two exports at once\n\n{result['concurrent']}", "", f"## Disk full\n\n{result['disk_full']}", "",
              "## The same export twice (bytes identical?)", "",
              format_table(("file", "identical"), list(result["determinism"].items()), markdown=True)]
    return "\n".join(lines)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1][:150] if text.strip() else ""


def passed(result: dict) -> bool:
    return (all(o.ok for o in result["outcomes"]) and all(t.ok for t in result["kills"])
            and result["concurrent"].startswith("ok") and not result["disk_full"].startswith("FAILED"))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from common import quiet

    parser = argparse.ArgumentParser(description="The reliability campaign (docs/reliability.md).")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a few inputs of each family (what make test runs)")
    args = parser.parse_args(argv)
    quiet.configure(False)
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        result = run_campaign(args.work or Path(tmp), args.seed, args.quick, args.kills)
        print(report(result))
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
