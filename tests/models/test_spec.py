"""The registry against the verified reference table, and the formulas against real modules."""

import pytest

from models.network import build_model
from models.spec import REGISTRY, ModelSpec, spec_for, upsample_count_by_rule


def _ints(cell: str) -> tuple[int, ...]:
    return tuple(int(x) for x in cell.split("(")[0].replace(",", " ").split())


@pytest.mark.parametrize("name", list(REGISTRY))
def test_registry_matches_reference_table(name, reference_table):
    row, spec = reference_table[name], REGISTRY[name]
    assert spec.depths == _ints(row["depths"])
    assert spec.dims == _ints(row["dims"])
    assert spec.head_channels == int(row["head Ch"])
    assert spec.heatmap_shape == tuple(int(x) for x in row["heatmap D×H×W"].split("×"))
    assert spec.params == int(row["params"].replace(",", ""))
    assert spec.state_dict_elements == int(row["state_dict elements"].replace(",", ""))
    assert abs(spec.macs / 1e9 - float(row["GMACs"])) <= 0.01


@pytest.mark.parametrize("name", list(REGISTRY))
def test_formulas_equal_the_built_module(name):
    spec = REGISTRY[name]
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert sum(t.numel() for t in model.state_dict().values()) == spec.state_dict_elements


def test_custom_spec_counts_follow_the_module():
    spec = ModelSpec("custom", depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), head_channels=32, num_upsample=1,
                     depth_bins=16, joints=21, input_size=128)
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert spec.heatmap_size == 8
    assert model(__import__("torch").zeros(2, 3, 128, 128)).shape == (2, 21, 3)


def test_spec_for_is_case_insensitive_and_names_the_choices():
    assert spec_for("xs") is REGISTRY["XS"]
    assert spec_for("S", joints=21).joints == 21
    with pytest.raises(KeyError, match="registered: XS, S, M, L"):
        spec_for("Tiny")


def test_upsample_rule_reproduces_every_registered_variant():
    for spec in REGISTRY.values():
        assert upsample_count_by_rule(spec.depth_bins, spec.input_size) == spec.num_upsample
    assert upsample_count_by_rule(48) is None


def test_invalid_specs_are_refused():
    with pytest.raises(ValueError, match="num_upsample"):
        ModelSpec("bad", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), head_channels=8, num_upsample=4, depth_bins=8)
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelSpec("bad", depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), head_channels=8, num_upsample=0, depth_bins=8,
                  input_size=100)
