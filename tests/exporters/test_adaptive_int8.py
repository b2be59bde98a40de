"""Adaptive int8 on a checkpoint made hard to quantise on purpose: one outlier channel.

Channel 0 of ``backbone.stages.1.0.pwconv1`` is scaled up 1000x and the matching input of
``pwconv2`` down 1000x. ReLU is positively homogeneous, so the float network computes the same
function, but that block's hidden activation range grows 1000x: with one int8 scale per tensor
every other channel of it rounds to a few steps. The full-integer recipe must miss its budget,
the sensitivity must rank that block first, and the adaptive file (that block float) must fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from cli import main
from exporters.pipeline.export import default_checkpoint
from judging.manifest import MANIFEST_NAME
from models.checkpoint import load_checkpoint

pytestmark = pytest.mark.e2e
OUTLIER_BLOCK = "backbone.stages.1.0"
FACTOR = 1000.0


@pytest.fixture(scope="module")
def outlier_checkpoint(tmp_path_factory):
    source = default_checkpoint("XS", 18, 0)
    snapshot = torch.load(source, map_location="cpu", weights_only=True)
    # fp32, so that the 1/1000 weights are not fp16 subnormals: the float function must stay the same
    network = {k: v.float() if v.is_floating_point() else v for k, v in snapshot["network"].items()}
    prefix = "module." if any(k.startswith("module.") for k in network) else ""
    for name, scale in (("pwconv1.weight", FACTOR), ("pwconv1.bias", FACTOR)):
        network[f"{prefix}{OUTLIER_BLOCK}.{name}"][0] *= scale
    network[f"{prefix}{OUTLIER_BLOCK}.pwconv2.weight"][:, 0] /= FACTOR
    path = tmp_path_factory.mktemp("outlier") / "XS-outlier.pth.tar"
    torch.save({**snapshot, "network": network}, path)
    return source, path


def _export(capsys, checkpoint, out, *extra) -> tuple[int, dict, str]:
    code = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--variant", "XS",
                 "--formats", "tflite,tflite-int8", *extra])
    printed = capsys.readouterr().out
    return code, json.loads((out / MANIFEST_NAME).read_text()), printed


@contextmanager
def cpu_hog():
    """Every core of this machine busy with another process's arithmetic while the block runs."""
    spin = "import time\nwhile True: sum(i * i for i in range(10000))"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_the_outlier_changes_nothing_in_float(outlier_checkpoint):
    source, outlier = outlier_checkpoint
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        before = load_checkpoint(source).build_model()(x)
        after = load_checkpoint(outlier).build_model()(x)
    assert float((before - after).abs().max()) < 1e-3  # heatmap px


@pytest.mark.campaign
def test_adaptive_int8_keeps_the_outlier_block_float_and_fits(outlier_checkpoint, tmp_path, capsys):
    _, outlier = outlier_checkpoint
    out = tmp_path / "XS"
    code, manifest, printed = _export(capsys, outlier, out)
    # no export decision rests on the clock: the same checkpoint exported beside a CPU hog publishes the same files
    with cpu_hog():
        _, busy, _ = _export(capsys, outlier, tmp_path / "XS-busy")
    files = lambda m: {a["file"]: a["sha256"] for a in m["artifacts"]}  # noqa: E731
    assert files(busy) == files(manifest) and "convnextpose-XS_int8-w8a8-adaptive.tflite" in files(manifest)
    rejected = {r["precision"]: r for r in manifest["rejected"]}
    published = {a["precision"]: a for a in manifest["artifacts"]}
    assert code == 3
    mixed = rejected["int8-w8a8-mixed"]
    assert mixed["reason"] == "precision cost over budget"
    assert mixed["verdict"]["cost"]["p99_input_px"] > 2 * mixed["verdict"]["budget_input_px"]

    adaptive = published["int8-w8a8-adaptive"]
    record = adaptive["details"]["adaptive"]
    ranking = list(record["sensitivity_p99_input_px"])
    assert ranking[0] == OUTLIER_BLOCK  # the block alone in int8 costs the most
    assert OUTLIER_BLOCK in record["float_layers"]
    assert len(record["float_layers"]) <= record["max_float_share"] * len(ranking)
    last = record["attempts"][-1]
    assert 0 < last["float_mac_share"] <= record["max_float_mac_share"]
    verdict = adaptive["verdict"]
    assert verdict["cost"]["p99_input_px"] <= verdict["budget_input_px"]  # verified, not just tried
    assert verdict["cost"]["p99_input_px"] < mixed["verdict"]["cost"]["p99_input_px"] / 2
    assert OUTLIER_BLOCK in adaptive["details"]["recipe"]
    assert f"adapted {adaptive['file']}" in printed and OUTLIER_BLOCK in printed

    assert main(["bench", str(out), "--only", "tflite-fp32,tflite-int8-w8a8-adaptive", "--min-runs", "5",
                 "--min-seconds", "0.2", "--warmup", "2", "--synthetic-n", "20"]) == 0
    bench_md = capsys.readouterr().out
    assert "| tflite-int8-w8a8-adaptive |" in bench_md
    assert f"layers kept float ({', '.join(record['float_layers'])};" in bench_md


@pytest.mark.campaign
def test_adaptive_int8_stops_at_its_limit_and_says_why(outlier_checkpoint, tmp_path, capsys):
    """A budget no recipe within the limits can meet: the adaptive file is rejected, with its attempts."""
    _, outlier = outlier_checkpoint
    code, manifest, _ = _export(capsys, outlier, tmp_path / "XS", "--max-error-px", "0.05")
    rejected = {r["precision"]: r for r in manifest["rejected"]}
    assert code == 3 and "int8-w8a8-adaptive" in rejected
    why = rejected["int8-w8a8-adaptive"]
    assert why["detail"].startswith("no adaptive recipe within the limits")
    attempts = why["details"]["adaptive"]["attempts"]
    assert [len(a["float_layers"]) for a in attempts][:2] == [1, 2]  # doubled, most sensitive first
    assert all(a["cost_p99_input_px"] > 0.05 for a in attempts)


def test_no_adaptive_file_when_the_full_integer_recipe_fits(xs_int8_export):
    out, _ = xs_int8_export
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    precisions = {a["precision"] for a in manifest["artifacts"]} | {r["precision"] for r in manifest["rejected"]}
    assert "int8-w8a8-mixed" in {a["precision"] for a in manifest["artifacts"]}
    assert "int8-w8a8-adaptive" not in precisions
