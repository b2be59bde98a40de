"""LiteRT's GPU accelerator on the software Vulkan device (runtimes/gpu).

The first tests need nothing set up: the error a user meets without `make gpu`, and the ways the
generic ``open_session`` refuses what the accelerator cannot run. The ``gpu`` ones run the accelerator
(`make test-gpu`, CI): tiny files whose answers are known (runtimes/gpu/probes.py), the two precisions
told apart by an input fp16 cannot hold, the failure paths -- a broken file, a file that kills the
worker, a worker past its time-out, a file the accelerator takes only in part -- each costing only its
own file, and the shipped XS weights' .tflite files on the accelerator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest

import runtimes
from common.errors import RuntimeUnavailableError
from runtimes.gpu import probes, target
from runtimes.gpu.runner import PRECISIONS
from runtimes.versions import version_of

GPU = pytest.mark.gpu


@pytest.fixture
def no_target(monkeypatch, tmp_path):
    """The GPU target as on a machine where `make gpu` never ran."""
    missing = tmp_path / "missing"
    for name, path in (("ROOT", missing), ("MESA", missing / "mesa"), ("LIBRARY_DIR", missing / "mesa" / "lib"),
                       ("ICD_FILE", missing / "lvp_icd.json"), ("TARGET_RECORD", missing / "target.json")):
        monkeypatch.setattr(target, name, path)
    return missing


def test_without_the_target_one_line_names_make_gpu(no_target, tmp_path):
    with pytest.raises(RuntimeUnavailableError, match="make gpu") as raised:
        target.ensure_ready()
    assert str(raised.value).startswith("GPU target not set up") and len(str(raised.value).splitlines()) == 1
    with pytest.raises(RuntimeUnavailableError, match="make gpu"):
        runtimes.open_session("litert", tmp_path / "any.tflite", layout="NHWC", accelerator="gpu")


def test_a_record_from_another_litert_version_is_out_of_date(no_target, monkeypatch):
    monkeypatch.setattr(target, "vulkan_loader", lambda: "libvulkan.so.1")
    target.LIBRARY_DIR.mkdir(parents=True)
    target.ICD_FILE.write_text("{}")
    record = {"mesa": "25.0.7-2~bpo12+1", "device": "llvmpipe", "driver": "Mesa", "vulkan_loader": "1.3",
              "packages": {"ai-edge-litert": "0.0.1"}}
    target.TARGET_RECORD.write_text(json.dumps(record))
    with pytest.raises(RuntimeUnavailableError, match=r"out of date \(self-checked with ai-edge-litert 0.0.1.*gpu`"):
        target.ensure_ready()
    record["packages"]["ai-edge-litert"] = version_of("ai-edge-litert")
    target.TARGET_RECORD.write_text(json.dumps(record))
    assert target.ensure_ready().mesa_release == "25.0.7"


def test_open_session_refuses_what_the_accelerator_does_not_run(tmp_path):
    with pytest.raises(ValueError, match="unknown accelerator 'npu'"):
        runtimes.open_session("litert", tmp_path / "f.tflite", accelerator="npu")
    with pytest.raises(ValueError, match="runs litert files on this machine, not onnxruntime"):
        runtimes.open_session("onnxruntime", tmp_path / "f.onnx", accelerator="gpu")
    with pytest.raises(ValueError, match="on an emulated CPU"):
        runtimes.open_session("litert", tmp_path / "f.tflite", cpu="cortex-a76", accelerator="gpu")


# ---- on the accelerator --------------------------------------------------------------------------

def _plus_argmax(x):
    import tensorflow as tf

    return x + tf.cast(tf.argmax(x, axis=-1), tf.float32)[..., None]


def _sorted(x):
    import tensorflow as tf

    return tf.sort(x, axis=-1)


#: ARG_MAX: an op the accelerator leaves to LiteRT's CPU path (is_fully_accelerated() false).
PARTIAL = probes.Probe("partial", (6, 3), _plus_argmax, lambda x: x + np.argmax(x, axis=-1)[..., None])
#: TOPK_V2 over 3 channels: ML Drift's kernel raises SIGFPE ("TopK requires src tensor C dimension to be
#: divisible by 4"), a real crash of the worker process.
CRASHES = probes.Probe("crashes", (6, 3), _sorted, lambda x: np.sort(x, axis=-1))


@pytest.fixture(scope="module")
def probe_files(tmp_path_factory):
    """Every probe written once (TensorFlow's converter: ~10 s with its import)."""
    folder = tmp_path_factory.mktemp("gpu-probes")
    files = {p.name: p.write(folder / f"{p.name}.tflite") for p in (probes.AFFINE, probes.CANCELLATION, PARTIAL,
                                                                     CRASHES)}
    broken = folder / "broken.tflite"
    whole = files["affine"].read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])  # truncated: the flatbuffer's tables point past its end
    return {**files, "broken": broken}


@GPU
def test_the_target_is_set_up_and_recorded():
    record = target.ensure_ready()
    assert "llvmpipe" in record.device and record.mesa_release.split(".")[0].isdigit()
    assert int(record.mesa_release.split(".")[0]) >= 25, "Debian 12's own lavapipe (22.3) is refused by Dawn"
    assert record.packages == {"ai-edge-litert": version_of("ai-edge-litert")}
    icd = json.loads(target.ICD_FILE.read_text())
    assert Path(icd["ICD"]["library_path"]).is_file() and Path(icd["ICD"]["library_path"]).is_absolute()


@GPU
def test_a_known_answer_on_the_accelerator_fully_accelerated(probe_files):
    from runtimes.gpu.runner import GpuJob, run_jobs

    x = probes.affine_inputs(3)
    fp16, fp32 = run_jobs([GpuJob(probe_files["affine"], "NCHW", p) for p in ("fp16", "fp32")], x)
    for run, precision in ((fp16, "fp16"), (fp32, "fp32")):
        assert run.fully_accelerated, run.job.name
        np.testing.assert_array_equal(run.outputs, probes.AFFINE.expected(x))
        assert f"GPU accelerator (ML Drift/WebGPU, {precision}) on Mesa" in run.runtime and "lavapipe" in run.runtime
    # the same through the generic door, as verify and the bench open files
    session = runtimes.open_session("litert", probe_files["affine"], layout="NCHW", accelerator="gpu")
    assert not session.timed and "GPU accelerator" in session.runtime
    np.testing.assert_array_equal(session.run_all(x), probes.AFFINE.expected(x))


@GPU
def test_fp16_and_enforce_f32_differ_where_fp16_rounds(probe_files):
    """(x + 1) - 1 for x ~ 1e-4: enforce_f32 gives x back, the default options' fp16 arithmetic loses it."""
    from runtimes.gpu.runner import GpuJob, run_jobs

    x = probes.cancellation_inputs()
    fp16, fp32 = run_jobs([GpuJob(probe_files["cancellation"], "NCHW", p) for p in ("fp16", "fp32")], x)
    assert fp16.fully_accelerated and fp32.fully_accelerated
    np.testing.assert_allclose(fp32.outputs, x, rtol=0, atol=2.0**-23)  # float32: x to within its spacing at 1
    assert np.abs(fp16.outputs - x).min() > 5e-5, f"fp16 kept x: {fp16.outputs.ravel()[:4]} (default options in fp32?)"


@GPU
def test_a_broken_file_and_a_crashing_one_fail_alone_naming_the_file(probe_files):
    from runtimes.gpu.runner import GpuJob, GpuRun, GpuRunFailed, run_jobs

    x = probes.affine_inputs(1)
    names = ["broken", "crashes", "affine"]
    broken, crashed, good = run_jobs([GpuJob(probe_files[n], "NCHW") for n in names], x)
    assert isinstance(broken, GpuRunFailed)
    assert str(broken).startswith("broken.tflite on the GPU accelerator (fp16): the worker exited with code 1 (")
    assert "Failed to load model" in str(broken)
    assert isinstance(crashed, GpuRunFailed), "TopK over 3 channels no longer kills the worker: find another crash"
    assert str(crashed).startswith("crashes.tflite on the GPU accelerator (fp16): the worker died of SIG")
    assert isinstance(good, GpuRun) and good.fully_accelerated
    np.testing.assert_array_equal(good.outputs, probes.AFFINE.expected(x))
    with pytest.raises(GpuRunFailed, match="broken.tflite on the GPU accelerator"):
        runtimes.open_session("litert", probe_files["broken"], layout="NCHW", accelerator="gpu").run_all(x)


@GPU
def test_a_worker_past_its_time_out_is_killed(probe_files):
    from runtimes.gpu.runner import GpuJob, GpuRunFailed, run_jobs

    (late,) = run_jobs([GpuJob(probe_files["affine"], "NCHW")], probes.affine_inputs(1), timeout_s=0.2)
    assert isinstance(late, GpuRunFailed)
    assert str(late) == "affine.tflite on the GPU accelerator (fp16): timed out after 0.2 s (worker killed)"
    workers = [p for p in psutil.process_iter(["cmdline"]) if "runtimes/gpu/worker.py" in " ".join(p.info["cmdline"]
                                                                                                   or [])]
    assert not workers, "a timed-out worker was left running"


@GPU
def test_a_file_the_accelerator_takes_in_part_is_reported_and_refused_by_a_session(probe_files):
    from runtimes.gpu.runner import GpuJob, GpuRunFailed, open_session, run_job

    x = probes.affine_inputs(1)
    run = run_job(GpuJob(probe_files["partial"], "NCHW"), x)
    assert not run.fully_accelerated
    np.testing.assert_array_equal(run.outputs, PARTIAL.expected(x))  # right, but partly computed on the CPU
    with pytest.raises(GpuRunFailed, match="partial.tflite .* did not take every op"):
        open_session(probe_files["partial"], "NCHW").run_all(x)
    np.testing.assert_array_equal(open_session(probe_files["partial"], "NCHW", require_full_acceleration=False)
                                  .run_all(x), PARTIAL.expected(x))


# ---- the shipped XS weights ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def xs_tflite(tmp_path_factory):
    """The shipped XS reference weights exported as ONNX and TFLite (~20-60 s): the golden joints of its
    fp32 and fp16 .tflite on this machine's CPU."""
    from exporters.pipeline.export import ExportOptions, default_checkpoint, run_export

    out = tmp_path_factory.mktemp("gpu-xs") / "XS"
    run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                             formats=("onnx", "tflite")))
    return out


def _golden(out: Path) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """(inputs NCHW, file -> golden joints, input px per heatmap px)."""
    golden = json.loads((out / "golden" / "golden.json").read_text())
    ids = [i["id"] for i in golden["inputs"]]
    x = np.concatenate([np.fromfile(out / "golden" / i["nchw"]["file"], np.float32).reshape(i["nchw"]["shape"])
                        for i in golden["inputs"]])
    joints = {f: np.array([a["joints"][i] for i in ids], np.float32) for f, a in golden["artifacts"].items()}
    return x, joints, x.shape[-1] / golden["units"]["heatmap_shape_dhw"][-1]


@GPU
def test_the_xs_tflite_files_run_whole_on_the_accelerator_and_match_in_fp32(xs_tflite):
    """enforce_f32: both files (the fp16 one's weights widened, as the CPU does) within the fp32 tolerance of the
    x86 CPU's golden joints (measured 0.0005 px). The default (fp16) options must take every op too; their
    distance is today's soft-argmax's (33 px, runtimes/gpu/runner.py), reported there, not judged here."""
    from runtimes.gpu.runner import GpuJob, run_jobs

    x, golden, to_input = _golden(xs_tflite)
    fp32_file = "convnextpose-XS_fp32.tflite"
    tolerance = float(json.loads((xs_tflite / "golden" / "golden.json").read_text())["artifacts"][fp32_file]
                      ["tolerance_input_px"])
    jobs = [GpuJob(xs_tflite / f, "NHWC", p) for f in (fp32_file, "convnextpose-XS_fp16.tflite") for p in PRECISIONS]
    for run in run_jobs(jobs, x):
        assert not isinstance(run, Exception), run
        expected = golden[run.job.artifact.name]
        assert run.fully_accelerated and run.outputs.shape == expected.shape and np.isfinite(run.outputs).all()
        if run.job.precision == "fp32":
            distance = np.linalg.norm(run.outputs[..., :2] - expected[..., :2], axis=-1) * to_input
            assert distance.max() <= tolerance, f"{run.job.name}: {distance.max():.5f} > {tolerance:.3f} input px"
