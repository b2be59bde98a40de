"""How checkpoints are read, checked by shape, and refused -- including the seed bug report's case."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import main
from common.errors import CheckpointError, CheckpointMismatchError
from models.checkpoint import load_checkpoint
from models.network import build_model
from models.spec import REGISTRY, ModelSpec

VARIANTS = list(REGISTRY)


def _network(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["network"]


# ---- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["named-head-keys", "legacy-head-keys"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_in_released_layout(make_ckpt, variant, legacy):
    path = make_ckpt(variant, legacy)
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"epoch", "network", "optimizer"}
    assert all(k.startswith("module.") for k in raw["network"])
    assert any(".deconv_layers_1.0." in k for k in raw["network"]) == legacy
    # the optimizer holds AdamW moments for every parameter, as the released files do
    assert len(raw["optimizer"]["state"]) == len(list(build_model(REGISTRY[variant]).parameters()))

    for requested in (variant, None):
        loaded = load_checkpoint(path, requested)
        assert loaded.matched_variant == variant
        assert loaded.spec.same_architecture(REGISTRY[variant])
        assert loaded.head_key_style == ("legacy-indices" if legacy else "named")
    model = loaded.build_model()
    for key, value in raw["network"].items():
        name = key.removeprefix("module.")
        for index, official in (("0", "dwconv"), ("1", "norm"), ("2", "pwconv")):
            if legacy and ".deconv_layers_" in name:
                name = name.replace(f".{index}.", f".{official}.", 1)
        assert torch.equal(model.state_dict()[name], value), name


def test_synthetic_checkpoints_are_deterministic_and_realistic(make_ckpt, tmp_path):
    a, b = _network(make_ckpt("XS")), _network(make_ckpt("XS", seed=1))
    again = _network(write_again(tmp_path))
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not torch.equal(a["module.head.final_layer.weight"], b["module.head.final_layer.weight"])
    # BatchNorm statistics were measured, not left at their 0/1 defaults
    assert a["module.backbone.norm.running_var"].sub(1).abs().mean() > 0.05
    assert a["module.backbone.norm.running_mean"].abs().mean() > 0.01
    # heatmaps are not uniform: the largest voxel probability is far above 1/(D*H*W)
    model = load_checkpoint(make_ckpt("XS")).build_model()
    with torch.no_grad():
        probs = torch.softmax(model.heatmaps(torch.randn(2, 3, 256, 256)).reshape(2, 18, -1), 2)
    assert probs.max(2).values.median() > 50 / probs.shape[-1]


def write_again(tmp_path: Path) -> Path:
    from models.synthetic.untrained import write_synthetic_checkpoint

    return write_synthetic_checkpoint(REGISTRY["XS"], tmp_path / "again.pth.tar", seed=0)


@pytest.mark.parametrize("layout", ["bare", "state_dict", "network-no-prefix"])
@pytest.mark.parametrize("suffix", [".pth", ".tar", ".pth.tar"])
def test_accepted_layouts_and_file_names(make_ckpt, tmp_path, layout, suffix):
    network = _network(make_ckpt("XS"))
    plain = {k.removeprefix("module."): v for k, v in network.items()}
    obj = {"bare": network, "state_dict": {"state_dict": network}, "network-no-prefix": {"network": plain}}[layout]
    path = tmp_path / f"ckpt{suffix}"
    torch.save(obj, path)
    assert load_checkpoint(path, "XS").matched_variant == "XS"


def test_muco_21_joints(make_ckpt):
    path = make_ckpt("S", joints=21)
    loaded = load_checkpoint(path, "S", joints=21)
    assert loaded.spec.joints == 21 and loaded.spec.depth_bins == 32
    # read with the default 18 joints, 21*32 channels are not a whole number of depth bins
    with pytest.raises(CheckpointError, match=r"672 output channels.*18 joints"):
        load_checkpoint(path)


# ---- the seed bug report: names lie, shapes do not ----------------------------------------------
def test_seed_case_convnext_small_dims_against_the_real_s_checkpoint(make_ckpt):
    wrong_s = dataclasses.replace(REGISTRY["S"], dims=(96, 192, 384, 768))  # ConvNeXt-Small's dims
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(make_ckpt("S"), wrong_s)
    msg = str(err.value)
    assert "does not match variant S (depths [3, 3, 9, 3], dims [96, 192, 384, 768]" in msg
    assert "backbone.downsample_layers.0.0.weight: checkpoint [48, 3, 4, 4], expected [96, 3, 4, 4]" in msg
    assert "backbone.downsample_layers.3.1.weight: checkpoint [384, 192, 2, 2], expected [768, 384, 2, 2]" in msg
    assert "... and" in msg  # more mismatches than listed are summarised, not dropped
    assert "matches registered variant S" in msg


def test_asking_for_s_on_an_xs_file_lists_every_difference(make_ckpt):
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(make_ckpt("XS"), "S")
    msg = str(err.value)
    assert "The checkpoint's tensors say: depths [2, 2, 6, 2], dims [40, 80, 160, 320]" in msg
    assert "backbone.downsample_layers.0.0.weight: checkpoint [40, 3, 4, 4], expected [48, 3, 4, 4]" in msg
    assert "173 tensor(s) with a different shape" in msg
    # S has 3 blocks in stage 0, XS has 2: the third block's tensors are missing
    assert "66 missing key(s) in modules: backbone.stages.0.2.dwconv, backbone.stages.0.2.norm," in msg
    assert "matches registered variant XS -- use --variant XS" in msg


def test_asking_for_s_on_an_m_file_names_m(make_ckpt):
    """Only the final layer differs (D 64 vs 32); the hint must still find M via the H == D rule."""
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(make_ckpt("M", legacy=True), "S")
    msg = str(err.value)
    assert "2 tensor(s) with a different shape" in msg
    assert "head.final_layer.weight: checkpoint [1152, 256, 1, 1], expected [576, 256, 1, 1]" in msg
    assert "matches registered variant M -- use --variant M" in msg


def test_custom_spec_is_inferred_from_shapes(tmp_path):
    custom = ModelSpec("mine", depths=(2, 2, 6, 2), dims=(48, 96, 192, 384), head_channels=128, num_upsample=2,
                       depth_bins=32)
    path = tmp_path / "custom.pth"
    torch.save({"network": build_model(custom).state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.matched_variant is None
    assert loaded.spec.same_architecture(dataclasses.replace(custom, name=loaded.spec.name))
    assert loaded.upsample_source == "rule H == D"
    assert any("inferred by the rule heatmap H == D" in w for w in loaded.warnings)
    assert any("matches no registered variant" in w for w in loaded.warnings)
    with pytest.raises(CheckpointMismatchError, match="matches no registered variant"):
        load_checkpoint(path, "XS")


def test_extra_or_missing_tensors_are_reported_without_a_variant(make_ckpt, tmp_path):
    network = dict(_network(make_ckpt("XS")))
    network.pop("module.backbone.norm.running_var")
    network["module.extra.weight"] = torch.zeros(3)
    torch.save({"network": network}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tmp_path / "odd.pth")
    assert "1 missing key(s) in modules: backbone.norm" in str(err.value)
    assert "1 unexpected key(s) in modules: extra" in str(err.value)


# ---- refusals at the command line: specific message, exit 2, no traceback ---------------------
def _bad_files(make_ckpt, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = make_ckpt("XS")
    network = _network(good)
    cases = {}

    def save(name: str, obj) -> Path:
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    nan = dict(network)
    nan["module.backbone.stages.2.3.pwconv1.weight"] = network["module.backbone.stages.2.3.pwconv1.weight"].clone()
    nan["module.backbone.stages.2.3.pwconv1.weight"][0, 0] = float("nan")
    cases["nan"] = (save("nan.pth", {"network": nan}),
                    "non-finite values: backbone.stages.2.3.pwconv1.weight (1 of 102400 values are NaN/Inf)")
    ints = dict(network)
    ints["module.head.final_layer.bias"] = network["module.head.final_layer.bias"].to(torch.int32)
    cases["dtype"] = (save("ints.pth", {"network": ints}), "wrong dtype: head.final_layer.bias (torch.int32")
    data = good.read_bytes()
    (tmp_path / "truncated.pth.tar").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "truncated.pth.tar", "truncated or corrupt")
    (tmp_path / "notes.pth").write_text("this is not a checkpoint\n")
    cases["text"] = (tmp_path / "notes.pth", "not a PyTorch checkpoint")
    cases["empty-dict"] = (save("empty.pth", {}), "checkpoint is an empty dict")
    cases["empty-network"] = (save("empty_net.pth", {"epoch": 3, "network": {}}), "state_dict at 'network' is empty")
    cases["no-weights"] = (save("opt.pth", {"epoch": 3, "optimizer": {"lr": 1}}), "no weights found")
    cases["list"] = (save("list.pth", [1, 2]), "top level is a list")
    (tmp_path / "empty.bin").write_bytes(b"")
    cases["zero-bytes"] = (tmp_path / "empty.bin", "file is empty")
    cases["missing"] = (tmp_path / "nope.pth", "no such file")
    cases["not-convnextpose"] = (save("resnet.pth", {"conv1.weight": torch.zeros(8, 3, 7, 7)}),
                                 "tensor 'backbone.downsample_layers.0.0.weight' is missing")
    with open(tmp_path / "pickled.pth", "wb") as f:  # an arbitrary object: needs full unpickling
        torch.save({"network": network, "config": _Config()}, f)
    cases["arbitrary-object"] = (tmp_path / "pickled.pth", "refused -- the file contains Python objects")
    return cases


class _Config:
    depth = 3


BAD = ["nan", "dtype", "truncated", "text", "empty-dict", "empty-network", "no-weights", "list", "zero-bytes",
       "missing", "not-convnextpose", "arbitrary-object"]


@pytest.mark.parametrize("case", BAD)
def test_cli_refuses_bad_files_with_a_specific_message(make_ckpt, tmp_path, capsys, case):
    path, expected = _bad_files(make_ckpt, tmp_path)[case]
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert str(path) in err
    assert "Traceback" not in err


def test_cli_mismatch_exit_code_and_message_in_a_real_process(make_ckpt):
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "inspect", str(make_ckpt("XS")), "--variant", "S"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "does not match variant S" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_prints_the_inferred_spec(make_ckpt, capsys):
    assert main(["inspect", str(make_ckpt("M", legacy=True))]) == 0
    out = capsys.readouterr().out
    assert "variant         M" in out
    assert "upsampling      3 (from rule H == D)" in out
    assert f"params          {REGISTRY['M'].params:,}" in out
    assert "head keys       legacy-indices" in out
    assert "untrained (NOT a trained model)" in out


def test_inspect_json(make_ckpt, capsys):
    import json

    assert main(["inspect", str(make_ckpt("XS")), "--variant", "XS", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "XS" and info["upsample_source"] == "variant"
    assert info["spec"]["params"] == REGISTRY["XS"].params
    assert len(info["sha256"]) == 64
