"""`export --verify-gpu`: every .tflite judged on LiteRT's GPU accelerator with its default options -- fp16
arithmetic, as a phone's GPU runs any float file -- against its budget (judging/on_gpu.py), and the golden
delegate tolerances taken from that measurement. The soft-argmax the files had before (softmax over D*H*W, one
long matmul) does not survive fp16 arithmetic: the same export with it is rejected on the GPU."""

from __future__ import annotations

import json

import pytest
import torch

from exporters.pipeline.export import FAILS_ON_GPU, ExportOptions, default_checkpoint, run_export
from judging.golden import GOLDEN_DIR, GOLDEN_JSON
from judging.manifest import MANIFEST_NAME
from judging.on_gpu import ACCELERATOR
from models.network import SoftArgmax3D

pytestmark = [pytest.mark.gpu, pytest.mark.e2e]


def _gpu_record(entry: dict) -> dict:
    return next(r for r in entry.get("verified_on", entry.get("details", {}).get("verified_on", []))
                if r.get("accelerator") == ACCELERATOR)


def test_every_tflite_keeps_its_budget_on_the_gpu_in_fp16(tmp_path):
    out = tmp_path / "XS"
    result = run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                                      formats=("tflite", "tflite-int8"), verify_gpu=True))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert not [r for r in manifest["rejected"] if r["reason"] == FAILS_ON_GPU], manifest["rejected"]
    tflites = [a for a in manifest["artifacts"] if a["file"].endswith(".tflite")]
    assert len(tflites) >= 5 and result.exit_code == 0
    golden = json.loads((out / GOLDEN_DIR / GOLDEN_JSON).read_text())["artifacts"]
    for a in tflites:
        gpu = _gpu_record(a)
        verdict = gpu["verdict"]
        assert gpu["status"] == "passed" and gpu["fully_accelerated"] and gpu["precision"] == "fp16", gpu
        # a float file is computed in fp16 there: the fp16 budget; an integer file its own
        assert verdict["arithmetic"] == ("int8" if "int8" in a["precision"] else "fp16")
        assert verdict["cost"]["p99_input_px"] <= verdict["budget_input_px"], (a["file"], verdict["cost"])
        print(f"{a['file']}: GPU fp16 cost p99 {verdict['cost']['p99_input_px']:.3g} input px "
              f"(budget {verdict['budget_input_px']:g}); {gpu['gpu_input_px']:.3g} px from this machine's joints")
        tolerance = golden[a["file"]]
        assert "GPU accelerator" in tolerance["delegate_tolerance_basis"]
        assert 2 * gpu["gpu_input_px"] <= tolerance["delegate_tolerance_input_px"] <= verdict["budget_input_px"] \
            or tolerance["delegate_tolerance_input_px"] == verdict["budget_input_px"]


def _softmax_then_one_matmul(self, heatmaps: torch.Tensor) -> torch.Tensor:
    """The tail before the fp16 rework: a softmax over D*H*W voxels, then one D*H*W-long matmul."""
    probs = torch.softmax(heatmaps.reshape(-1, self.joints, self.coords.shape[0]), dim=2)
    return torch.matmul(probs, self.coords)


def test_the_old_soft_argmax_is_rejected_on_the_gpu(tmp_path, monkeypatch):
    """The same check on a file with the old tail: correct in fp32 here, far off in fp16 on the GPU."""
    monkeypatch.setattr(SoftArgmax3D, "forward", _softmax_then_one_matmul)
    out = tmp_path / "XS-old-tail"
    run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                             formats=("onnx", "tflite"), verify_gpu=True))  # the ONNX files keep OUT published
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    rejected = {r["file"]: r for r in manifest["rejected"]}
    fp32 = rejected["convnextpose-XS_fp32.tflite"]
    assert fp32["reason"] == FAILS_ON_GPU, fp32
    gpu = _gpu_record(fp32)
    assert gpu["verdict"]["cost"]["p99_input_px"] > 1.0 and gpu["fully_accelerated"], gpu
    print(f"old tail, fp32 .tflite on the GPU in fp16: cost p99 {gpu['verdict']['cost']['p99_input_px']:.3g} input px, "
          f"{gpu['gpu_input_px']:.3g} px from this machine's joints")
