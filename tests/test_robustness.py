"""A representative slice of the reliability campaign (`make robustness` runs all of it): every family of
bad input, kills at random and at the publish step, Ctrl-C, two exports at once, a full disk, the same
export twice."""

from __future__ import annotations

import signal

import pytest

from robustness import campaign
from robustness.corpus import image_cases

pytestmark = [pytest.mark.e2e, pytest.mark.campaign]
FORMATS = "onnx,coreml"  # quick exports; `make robustness` kills exports of onnx, tflite and Core ML


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("robustness")


@pytest.fixture(scope="module")
def corpus(work):
    return campaign.build_corpus(work, seed=0, quick=True)


def test_every_family_of_bad_input_gets_its_outcome(corpus):
    cases, _ = corpus
    assert {c.family for c in cases} == {"checkpoint", "image", "export folder", "option"}
    outcomes = [campaign.run_case(c) for c in cases]
    outcomes += [campaign.run_as_process(c) for c in cases if c.family == "option"][:1]
    wrong = [(o.case.name, o.code, o.out_state, o.output[-300:]) for o in outcomes if not o.ok]
    assert wrong == []
    assert sum(o.code == 2 for o in outcomes) >= 10 and not any(o.traceback for o in outcomes)


def test_accepted_odd_photos_give_a_complete_export_and_bad_ones_leave_out_alone(work, corpus):
    _, checkpoint = corpus
    cases = {c.name: c for c in image_cases(work / "more-images", checkpoint, work / "more-outs", seed=1)}
    for name in ("--images exif-rotated", "--images decompression-bomb", "--images 16-bit-png"):
        outcome = campaign.run_case(cases[name])
        assert outcome.ok, (name, outcome.code, outcome.out_state, outcome.output[-300:])


@pytest.fixture(scope="module")
def template(work, corpus):
    _, checkpoint = corpus
    out = work / "kill-template"
    campaign.subprocess.run([campaign.sys.executable, "-m", "cli", *campaign.export_args(checkpoint, out, FORMATS)],
                            capture_output=True, check=True)
    return out


#: When each trial stops the export: seconds after its start, or a phase that is the same on any machine.
KILLS = {"SIGKILL at 3 s": 3.0, "before-publish": None, "after-swap": None,
         "Ctrl-C while it loads": 0.5, "Ctrl-C in its stages": campaign.STAGES}


@pytest.mark.parametrize("how", list(KILLS))
def test_a_killed_export_leaves_out_old_or_new_never_mixed(work, corpus, template, how):
    _, checkpoint = corpus
    point = how if KILLS[how] is None else None
    sig = signal.SIGINT if how.startswith("Ctrl-C") else signal.SIGKILL
    trial = campaign.kill_trial(checkpoint, template, work / "kill", KILLS[how], point, sig, FORMATS)
    assert trial.ok, trial
    assert trial.state == ("new" if point == "after-swap" else "old")
    if sig == signal.SIGINT:
        assert trial.code == 130, trial.said
        assert trial.said.strip().endswith("interrupted; no partial artifacts were left in place"), trial.said


def test_two_exports_into_one_out(work, corpus):
    _, checkpoint = corpus
    result = campaign.concurrent_exports(checkpoint, work)
    assert result.startswith("ok"), result


def test_a_full_disk_is_said_and_out_is_unchanged(work, corpus):
    _, checkpoint = corpus
    result = campaign.disk_full(checkpoint, work)
    if result.startswith("skipped"):
        pytest.skip(result)  # the campaign needs root to mount a small filesystem
    assert result.startswith("ok"), result


def test_the_same_export_twice_gives_the_same_bytes(work, corpus):
    _, checkpoint = corpus
    same = campaign.determinism(checkpoint, work, FORMATS)
    assert {name for name, answer in same.items() if answer != "yes"} <= {"manifest.json"}, same
    assert same["manifest.json"] == "yes but stage_seconds (timings)"
