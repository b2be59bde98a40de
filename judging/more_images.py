"""A cost judged on as many images as its decision needs.

A p99 over a first set of images whose 95 % interval straddles the budget (judging/gates.py: borderline) is
judged again on more images of the same kind, doubling the judged count until the interval lies wholly
within or wholly over the budget, or MAX_JUDGED_IMAGES is reached. The export runs it for each file it
judges (exporters/pipeline/export_run.py); `verify` rebuilds the same images from the manifest
(judging/verify.as_exported_set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from judging.gates import BORDERLINE, Budgets, Verdict, judge
from judging.inputs import InputSet
from judging.references import References

log = logging.getLogger(__name__)

#: A borderline cost is judged on up to this many images. Measured on the XS int8 files (5 draws each): the
#: p99 over 160 images lies within 0.26 px of the p99 over 400, over 80 images within 0.41 px.
MAX_JUDGED_IMAGES = 160

#: (extra judged images wanted in all) -> (those images, in order, and the references on the set extended by
#: them). A longer draw starts with a shorter one's images, so only the new ones are run.
Draw = Callable[[int], tuple[InputSet, References]]


def judge_until_decided(verdict: Verdict, joints: np.ndarray, judged: np.ndarray, units: np.ndarray | None,
                        arithmetic: str, budgets: Budgets, draw: Draw, run_all: Callable[[np.ndarray], np.ndarray],
                        name: str = "", cap: int = MAX_JUDGED_IMAGES) -> Verdict:
    """``verdict`` (on ``joints`` with ``judged`` rows, ``units`` their units of evidence: InputSet.units) judged
    on more images while it is borderline, up to ``cap`` judged rows; ``run_all`` gives the file's joints on
    (N, 3, S, S) RGB [0, 1] images."""
    first = int(judged.sum())
    units = np.arange(len(judged)).astype(str) if units is None else np.asarray(units)
    drawn = 0
    while verdict.kind == BORDERLINE and int(judged.sum()) < cap:
        more, refs = draw(min(2 * int(judged.sum()), cap) - first)
        joints = np.concatenate([joints, run_all(more.images[drawn:])])
        judged = np.concatenate([judged, np.ones(len(more) - drawn, dtype=bool)])  # all of the judged kind
        units = np.concatenate([units, more.units()[drawn:]])
        drawn = len(more)
        verdict = judge(joints, arithmetic, refs, judged, budgets, units)
        log.info("%s: borderline, judged again on %d images: cost p99 %.3g %s over %s, %s", name, int(judged.sum()),
                 verdict.cost.p99_input_px, verdict.interval.cell(), verdict.interval.evidence, verdict.kind)
    return verdict
