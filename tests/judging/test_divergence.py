"""Boundary matching and the first jump, on tensors made here (no runtime): the rules diagnose relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from judging.boundaries import JOINTS, Boundary, boundaries, torch_boundaries
from judging.divergence import CEILING_DB, JUMP_DB, BoundaryError, entry, first_jump, match, snr_db
from models.network import build_model


def _errors(snrs: list[float | None]) -> list[BoundaryError]:
    return [BoundaryError(f"b{i}", f"b{i}", None if s is None else f"t{i}", False, s, None)
            for i, s in enumerate(snrs)]


def test_snr_is_capped_and_signed():
    assert snr_db(1.0, 0.0) == CEILING_DB
    assert snr_db(1.0, 1e-2) == pytest.approx(20.0)
    assert snr_db(1.0, 10.0) == pytest.approx(-10.0)


@pytest.mark.parametrize("snrs, enters, jump", [
    ([80, 80, 80, 80], None, None),  # fp32: never below the ceiling
    ([60, 64, 58, 61], "b0", None),  # fp16: the error enters at the first layer and stays
    ([30, 26, 27, 25, 24], "b0", None),  # int8: a gradual decline is not a jump
    ([30, 24, 2, 5], "b0", "b2"),  # int8 with one outlier layer
    ([80, 80, 9, 10, 11], "b2", "b2"),  # a dropped BatchNorm
    ([70, 60, 74, 58], "b1", None),  # against the lowest so far: a recovery then a fall back is no jump
    ([70, 60, 74, 45], "b1", "b3"),
    ([80, None, 80], "b1", "b1"),  # no tensor of that shape: the graph lost the boundary
    ([5, 4, 6], "b0", None),  # a broken first layer: only its level says so
])
def test_entry_and_first_jump(snrs, enters, jump):
    errors = _errors(snrs)
    assert (entry(errors).boundary if entry(errors) else None) == enters
    assert (first_jump(errors).boundary if first_jump(errors) else None) == jump


def test_a_jump_needs_the_full_threshold():
    assert first_jump(_errors([70.0, 70.0 - JUMP_DB + 0.5])) is None
    assert first_jump(_errors([70.0, 70.0 - JUMP_DB])).boundary == "b1"
    assert entry(_errors([CEILING_DB - JUMP_DB + 0.5])) is None
    assert entry(_errors([CEILING_DB - JUMP_DB])).boundary == "b0"


def _found(*names: str) -> list[Boundary]:
    return [Boundary(n, n, None) for n in names]


def test_match_finds_transposed_tensors_among_decoys_in_order():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1, 4, 6, 6)), rng.normal(size=(1, 4, 6, 6))
    refs = [{"a": a, "b": b}]
    nhwc = lambda t: np.ascontiguousarray(t.transpose(0, 2, 3, 1))  # noqa: E731
    run = [("decoy-before", nhwc(rng.normal(size=(1, 4, 6, 6)))), ("A", nhwc(a + 1e-3 * rng.normal(size=a.shape))),
           ("decoy", nhwc(rng.normal(size=(1, 4, 6, 6)))), ("B", nhwc(b)), ("after", rng.normal(size=(1, 9)))]
    result = match(refs, [run], _found("a", "b"))
    assert [e.tensor for e in result.boundaries] == ["A", "B"]
    assert all(e.transposed for e in result.boundaries)
    assert 55 < result.boundaries[0].snr_db < 65  # noise 1e-3 on unit values: ~60 dB
    assert result.boundaries[1].snr_db == CEILING_DB and result.entry.boundary == "a" and result.first_jump is None


def test_a_later_better_match_cannot_starve_the_boundaries_after_it():
    """Boundary a's own tensor is poor; b's tensor is a better fit for a too. Greedy best-per-boundary
    would give it to a; the ordered assignment keeps it for b, where the sum of SNRs is largest."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 2, 4, 4))
    b = a + 0.05 * rng.normal(size=a.shape)
    refs = [{"a": a, "b": b}]
    run = [("A", a + 1.0 * rng.normal(size=a.shape)), ("B", b)]
    result = match(refs, [run], _found("a", "b"))
    assert [e.tensor for e in result.boundaries] == ["A", "B"]
    assert result.entry.boundary == "a"


def test_every_input_is_scored_with_the_tensors_matched_on_the_first():
    rng = np.random.default_rng(2)
    refs = [{"a": rng.normal(size=(1, 3))} for _ in range(2)]
    runs = [[("A", refs[0]["a"].copy())], [("A", refs[1]["a"] + 1.0)]]
    result = match(refs, runs, _found("a"))
    assert result.images == 2 and result.boundaries[0].max_abs == pytest.approx(1.0)
    assert result.boundaries[0].snr_db < CEILING_DB


def test_boundaries_follow_the_architecture(tiny_spec):
    model = build_model(tiny_spec)
    found = boundaries(model)
    blocks = [b for b in found if ".stages." in b.name]
    assert len(blocks) == sum(tiny_spec.depths)
    assert found[0].label == "stem" and found[-1].name == JOINTS and found[-2].label == "logits"
    values = torch_boundaries(model, torch.zeros(1, 3, tiny_spec.input_size, tiny_spec.input_size))
    assert list(values) == [b.name for b in found]
    assert values[JOINTS].shape == (1, tiny_spec.joints, 3)
    assert values["head.final_layer"].shape[1] == tiny_spec.output_channels
