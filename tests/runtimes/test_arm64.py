"""The emulated arm64 phone cores (runtimes/arm64, judging/cross_isa.py, benchmarks/arm64.py).

The first tests need nothing set up: the error a user meets without `make arm64`, and the golden
tolerance rule. The ``arm64`` ones run the real emulators (`make test-arm64`, CI): an XS export judged
on every core; instruction counts that repeat, agree with the former counting emulator, and follow the
cores' instruction sets (dot product, i8mm, none on A53); first frames and weight caches; memory; and
the failure paths -- an emulator that dies, one that hangs -- each costing only its own file.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest

from cli import main
from common.errors import RuntimeUnavailableError
from exporters.app_files.golden import NUM_GOLDEN
from judging import golden
from judging.manifest import Manifest
from runtimes.arm64 import target

ARM64 = pytest.mark.arm64


@pytest.fixture
def no_target(monkeypatch, tmp_path):
    """The arm64 target as on a machine where `make arm64` never ran."""
    monkeypatch.setattr(target, "TARGET_RECORD", tmp_path / "missing" / "target.json")
    monkeypatch.setattr(target, "FAST_QEMU", tmp_path / "missing" / "qemu-aarch64")
    monkeypatch.setattr(target, "COUNTING_QEMU", tmp_path / "missing" / "qemu-count")
    monkeypatch.setattr(target, "ROOT", tmp_path / "missing")


def test_without_the_target_one_line_names_make_arm64(no_target, tmp_path, capsys):
    with pytest.raises(RuntimeUnavailableError, match="make arm64"):
        target.ensure_ready()
    for argv in (["verify", str(tmp_path), "--arch", "arm64"], ["bench", str(tmp_path), "--arch", "arm64"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: arm64 target not set up") and "make arm64" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_export_with_verify_arch_refuses_before_any_work(no_target, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--variant", "XS", "--untrained", "--out", str(out), "--verify-arch", "arm64"]) == 2
    assert "make arm64" in capsys.readouterr().err
    assert not out.exists()


def _manifest_with(art_verified_on: list[dict], precision_budget: float | None) -> tuple[Manifest, object]:
    """A real export's manifest (the shipped XS weights' record) with one artifact's arm64 records replaced."""
    spec_dict = {"fp32_noise_floor_px": 0.002, "noise_factor": 10.0, "floor_input_px": 0.01,
                 "budgets_input_px": {"fp16": 1.0, "int8": 4.0}}
    from judging.manifest import Artifact
    from models.spec import spec_for

    verdict = {"conversion": None if precision_budget else {"tolerance_input_px": 0.16}, "budget_input_px":
               precision_budget, "arithmetic": "int8" if precision_budget else "fp32"}
    art = Artifact("f.tflite", "tflite", "int8-w8a8-pw" if precision_budget else "fp32", "NHWC", (1, 256, 256, 3), 1,
                   "0", "litert", verdict, {}, tuple(art_verified_on))
    manifest = Manifest(variant="XS", spec=spec_for("XS"), checkpoint={}, input={}, output={}, joints={},
                        verification={}, gates=spec_dict, artifacts=(art,), versions={}, stage_seconds={})
    return manifest, art


def test_cpu_tolerance_follows_the_measurement_within_floor_and_budget():
    host = {"cpu": "x86", "emulated": False}
    arm = lambda cpu, px: {"cpu": cpu, "emulated": True, "cross_isa_input_px": px}
    manifest, art = _manifest_with([host, arm("cortex-a76", 0.3), arm("cortex-a53", 0.5)], 4.0)
    floor = golden.fp32_tolerance_input_px(manifest)  # 10 x 0.002 heatmap px x 8 = 0.16 input px
    assert floor == pytest.approx(0.16)
    tol = golden.cpu_tolerance(art, manifest)
    assert tol.input_px == pytest.approx(golden.CROSS_ISA_MARGIN * 0.5) and "cortex-a53" in tol.basis
    # a tiny cross-ISA difference never takes it below the fp32 tolerance ...
    _, tiny = _manifest_with([host, arm("cortex-a76", 0.001)], 4.0)
    assert golden.cpu_tolerance(tiny, manifest).input_px == pytest.approx(floor)
    # ... a large one never above the budget
    _, large = _manifest_with([host, arm("cortex-a76", 3.0)], 4.0)
    assert golden.cpu_tolerance(large, manifest).input_px == 4.0
    # not verified on arm64: the budget (nothing measured), and the delegate tolerance is the budget too
    _, unmeasured = _manifest_with([host], 4.0)
    assert golden.cpu_tolerance(unmeasured, manifest).input_px == 4.0
    assert "not verified on another CPU" in golden.cpu_tolerance(unmeasured, manifest).basis
    assert golden.delegate_tolerance(art, manifest).input_px == 4.0
    # an fp32 file: the fp32 tolerance on the CPU, the fp16 budget on a (GPU) delegate
    _, fp32 = _manifest_with([host], None)
    assert golden.cpu_tolerance(fp32, manifest).input_px == pytest.approx(floor)
    assert golden.delegate_tolerance(fp32, manifest).input_px == 1.0


def test_a_tagged_fp16_files_cost_names_its_fp16_arithmetic_figure():
    """The cheapest-file advice quotes what a core with FP16 arithmetic computes, not only the x86 fp32 cost."""
    from benchmarks.arm64 import precision_cost

    _, art = _manifest_with([], 1.0)
    art = replace(art, precision="fp16", verdict={**art.verdict, "cost": {"p99_input_px": 0.02}})
    assert precision_cost(art) == "fp16: p99 0.02 input px (budget 1)"
    tagged = {"fp16_arithmetic": {"tag": "fp16accfp16", "judged_on": {
        "cpu": "cortex-a76", "verdict": {"cost": {"p99_input_px": 0.26}}}}}
    assert precision_cost(replace(art, details=tagged)).endswith("; p99 0.26 in fp16 arithmetic (cortex-a76)")


# ---- on the emulated cores -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def arm64_verified(xs_int8_export, tmp_path_factory):
    """The shipped XS weights' full export, verified on every emulated core (a copy: verify writes records)."""
    from judging.verify import check_on_arm64

    out = tmp_path_factory.mktemp("arm64") / "XS"
    shutil.copytree(xs_int8_export[0], out)
    before = json.loads((out / "golden" / "golden.json").read_text())
    manifest, checks = check_on_arm64(out)
    return out, before, manifest, checks


@ARM64
def test_every_tflite_onnx_and_ort_passes_on_every_core_and_is_recorded(arm64_verified):
    out, before, manifest, checks = arm64_verified
    expected = {a.file for a in manifest.artifacts if a.file.endswith((".tflite", ".onnx", ".ort"))}
    assert set(checks) == expected and len(expected) == 10
    for file, per_cpu in checks.items():
        assert [c.cpu for c in per_cpu] == [m.qemu_cpu for m in target.CPU_MODELS]
        for c in per_cpu:
            assert c.passed, f"{file} on {c.cpu}: {c.reason}"
            assert c.inputs == NUM_GOLDEN and np.isfinite(c.cross_isa_input_px)
            assert "aarch64" in c.runtime and c.cpu in c.runtime
    on_disk = Manifest.read(out)
    for art in on_disk.artifacts:
        # records of CPUs; an fp16 Core ML program also has its fp16-accumulation record, which names no CPU
        cpus = [r["cpu"] for r in art.verified_on if "cpu" in r]
        assert not [r for r in art.verified_on if "cpu" not in r and r.get("accumulation") != "fp16"], art.file
        if art.file in expected:
            assert cpus[1:] == [m.qemu_cpu for m in target.CPU_MODELS] and not art.verified_on[0]["emulated"]
        else:  # Core ML: this machine's evaluator only
            assert len(cpus) == 1


@ARM64
def test_golden_cpu_tolerances_come_from_the_measurement(arm64_verified):
    out, before, manifest, checks = arm64_verified
    after = json.loads((out / "golden" / "golden.json").read_text())
    floor = golden.fp32_tolerance_input_px(manifest)
    for file, per_cpu in checks.items():
        entry, measured = after["artifacts"][file], max(c.cross_isa_input_px for c in per_cpu)
        budget = before["artifacts"][file]["delegate_tolerance_input_px"]
        assert entry["joints"] == before["artifacts"][file]["joints"]  # joints untouched
        assert entry["tolerance_input_px"] >= min(budget, max(floor, measured)) - 1e-12
        assert entry["tolerance_input_px"] <= budget + 1e-12
        assert entry["cross_isa_input_px"] == pytest.approx({c.cpu: c.cross_isa_input_px for c in per_cpu})
    int8 = [f for f in checks if "int8" in f]
    # the point of measuring: most integer files now have a CPU tolerance well inside their 4 px budget
    assert sum(after["artifacts"][f]["tolerance_input_px"] < 4.0 for f in int8) >= len(int8) - 1


def _jobs(out: Path, names: list[str], cpu, count: bool = False):
    from runtimes.arm64.runner import EmulatedJob

    manifest = Manifest.read(out)
    arts = {a.file: a for a in manifest.artifacts}
    return [EmulatedJob(out / n, arts[n].runtime, arts[n].layout, cpu, count) for n in names]


def _golden_input(out: Path) -> np.ndarray:
    from benchmarks.arm64 import first_golden_input

    return first_golden_input(out)


def _core_without_cpuinfo(tmp_path: Path):
    """A Cortex-A53 root whose /proc/cpuinfo went missing: the host's x86 one shows through, and ONNX Runtime
    dies at import under qemu 7.2 (the cross-check emulator; qemu 10 writes its own /proc/cpuinfo; toolchain
    note) -- a real emulator death, not a mock."""
    good = target.cpu_model("cortex-a53")
    root = tmp_path / "a53-without-cpuinfo"
    root.mkdir()
    for entry in good.root().iterdir():
        if entry.name != "proc":
            (root / entry.name).symlink_to(entry.resolve())
    return replace(good, root_dir=root)


@ARM64
def test_an_emulator_that_dies_fails_its_file_only(xs_int8_export, tmp_path):
    from runtimes.arm64.runner import EmulatedRun, EmulationFailed, run_jobs

    out = xs_int8_export[0]
    dying = [replace(j, emulator="cross-check") for j in
             _jobs(out, ["convnextpose-XS_int8-qdq.onnx"], _core_without_cpuinfo(tmp_path), count=True)]
    jobs = [*dying, *_jobs(out, ["convnextpose-XS_int8-w8a8-mixed.tflite"], target.cpu_model("cortex-a53"), count=True)]
    dead, alive = run_jobs(jobs, _golden_input(out), timeout_s=300)
    assert isinstance(dead, EmulationFailed), "ONNX Runtime no longer dies here: pick another way to kill it"
    assert "convnextpose-XS_int8-qdq.onnx on cortex-a53: the emulator died of SIG" in str(dead)
    assert isinstance(alive, EmulatedRun) and alive.outputs.shape == (1, 18, 3) and alive.instructions


@ARM64
def test_a_file_that_hangs_times_out_alone_and_its_emulator_is_killed(xs_int8_export, tmp_path):
    """A job whose file never arrives -- a FIFO nobody writes: the emulated runtime blocks reading it, whatever the
    machine's speed -- is killed at its time-out; the job beside it, given the same generous time-out, is judged.
    No figure of this machine decides which job fails (an 18 s time-out between the integer and float files'
    times once cut an integer file too on a slower CPU)."""
    import os

    from runtimes.arm64.runner import EmulatedRun, EmulationFailed, run_jobs

    out = xs_int8_export[0]
    never = tmp_path / "never-written.tflite"
    os.mkfifo(never)
    [real] = _jobs(out, ["convnextpose-XS_int8-w8a8-mixed.tflite"], target.CPU_MODELS[0])
    hung, judged = run_jobs([replace(real, artifact=never), real], _golden_input(out), timeout_s=240)
    assert isinstance(hung, EmulationFailed) and "timed out after 240 s (emulator killed)" in str(hung)
    assert isinstance(judged, EmulatedRun) and judged.outputs.shape == (1, 18, 3)
    emulators = [p for p in psutil.process_iter(["cmdline"]) if "qemu-aarch64" in " ".join(p.info["cmdline"] or [])]
    assert not emulators, "a timed-out emulator was left running"


@ARM64
def test_verify_records_each_file_that_cannot_finish_with_its_reason(xs_int8_export, tmp_path):
    """A time-out no file can meet (the emulated Python alone takes seconds to start): every file fails with the
    reason, recorded in the manifest, and nothing else is left behind."""
    from judging.verify import check_on_arm64

    out = tmp_path / "XS"
    shutil.copytree(xs_int8_export[0], out)
    _, checks = check_on_arm64(out, cpus=target.CPU_MODELS[:1], timeout_s=0.5)
    assert checks and all("timed out after 0.5 s (emulator killed)" in c.reason for [c] in checks.values())
    recorded = {a.file: a.verified_on[-1] for a in Manifest.read(out).artifacts if a.file in checks}
    assert {f: r["status"] for f, r in recorded.items()} == {f: "failed" for f in checks}
    emulators = [p for p in psutil.process_iter(["cmdline"]) if "qemu-aarch64" in " ".join(p.info["cmdline"] or [])]
    assert not emulators, "a timed-out emulator was left running"


@ARM64
def test_export_rejects_every_file_that_fails_on_arm64_and_leaves_out_as_it_was(tmp_path):
    """Every file failing on the emulated cores (a time-out none can meet): nothing published, OUT untouched,
    the reason per file in the error. (Which file fails is not left to this machine's speed.)"""
    from common.errors import ExportError
    from exporters.pipeline.export import FAILS_ON_ARM64, ExportOptions, default_checkpoint, run_export

    out = tmp_path / "XS"
    with pytest.raises(ExportError) as raised:
        run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                                 formats=("onnx", "onnx-int8"), verify_arch="arm64", verify_arch_timeout_s=0.5))
    message = str(raised.value)
    for name in ("convnextpose-XS.onnx", "convnextpose-XS.sim.onnx", "convnextpose-XS_int8-qdq.onnx"):
        assert name in message
    assert FAILS_ON_ARM64 in message and "timed out after 0.5 s" in message
    assert not out.exists()


@ARM64
def test_the_fp16_tflite_runs_in_fp16_on_cores_that_have_it_at_about_half_the_instructions(tmp_path):
    """export --verify-arch arm64 tags the fp16 .tflite for fp16 arithmetic (reduced_precision_support
    fp16accfp16) once it keeps its budget in it on the emulated Cortex-A76; the A53, without FP16 arithmetic,
    runs the same file in fp32 and agrees with this machine within the fp32 tolerance."""
    from benchmarks.arm64 import count_instructions
    from exporters.converters.to_tflite import FP16_ARITHMETIC, reduced_precision
    from exporters.pipeline.export import ExportOptions, default_checkpoint, run_export

    out = tmp_path / "XS"
    run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=default_checkpoint("XS", 18, 0),
                             formats=("tflite",), verify_arch="arm64"))
    manifest = Manifest.read(out)
    fp16 = next(a for a in manifest.artifacts if a.precision == "fp16")
    fp32 = next(a for a in manifest.artifacts if a.precision == "fp32")
    assert reduced_precision((out / fp16.file).read_bytes()) == FP16_ARITHMETIC
    tag = fp16.details["fp16_arithmetic"]
    assert tag["tagged"] and tag["judged_on"]["cpu"] == target.FP16_CORE and tag["judged_on"]["status"] == "passed"
    on = {r["cpu"]: r for r in fp16.verified_on if r.get("emulated")}
    assert all(r["status"] == "passed" for r in on.values()), on
    fp32_tolerance = golden.fp32_tolerance_input_px(manifest)
    assert on["cortex-a53"]["cross_isa_input_px"] <= fp32_tolerance < on[target.FP16_CORE]["cross_isa_input_px"]
    a76, a53 = target.FP16_CORE, "cortex-a53"
    rows = count_instructions(out, cpus=(target.cpu_model(a76), target.cpu_model(a53)), caches=False)
    counts = {(r.file, r.cpu): r.per_inference for r in rows}
    assert next(r for r in rows if (r.file, r.cpu) == (fp16.file, a76)).mix["fp16"] > 0  # fp16 arithmetic ran
    for cpu in (a76, a53):
        print(f"{cpu}: fp32 {counts[fp32.file, cpu] / 1e6:.1f} M, fp16 {counts[fp16.file, cpu] / 1e6:.1f} M "
              "instructions per inference")
    assert counts[fp16.file, a76] <= 0.6 * counts[fp32.file, a76]
    assert counts[fp16.file, a53] >= 0.9 * counts[fp32.file, a53]  # no FP16 arithmetic: the fp32 path


# ---- what a file costs on each core (benchmarks/arm64.py) ----------------------------------------------

FP32, INT8 = "convnextpose-XS_fp32.tflite", "convnextpose-XS_int8-w8a8-mixed.tflite"
QDQ = "convnextpose-XS_int8-qdq.onnx"


@pytest.fixture(scope="module")
def arm64_counts(xs_int8_export):
    """Three XS files counted on every core with their first frames, and through the weight caches on A76 and on
    A53 (what `bench --arch arm64` runs, the caches on two cores: they do not depend on the core but for A53)."""
    from benchmarks.arm64 import count_instructions

    rows = count_instructions(xs_int8_export[0], only=(FP32, INT8, QDQ), cache_cores=("cortex-a76", "cortex-a53"))
    return {(r.file, r.cpu): r for r in rows}


@ARM64
def test_the_kernels_each_core_gets_follow_its_instruction_set(arm64_counts):
    """A core executes only the instruction classes it has; integer TFLite uses the dot product on A55/A76 and
    int8 matrix multiply on A710; the 2012 A53 gets neither (and no FP16 arithmetic: fp16 files run in fp32)."""
    for (file, cpu), row in arm64_counts.items():
        assert row.status == "counted", row.reason
        used = {k for k, v in row.mix.items() if v}
        assert used <= set(target.cpu_model(cpu).extensions), (file, cpu, row.mix)
    assert arm64_counts[INT8, "cortex-a55"].mix["dot"] > 0 and arm64_counts[INT8, "cortex-a76"].mix["dot"] > 0
    assert arm64_counts[INT8, "cortex-a710"].mix["i8mm"] > 0
    assert not any(n for f in (FP32, INT8, QDQ) for n in arm64_counts[f, "cortex-a53"].mix.values())


@ARM64
def test_integer_costs_fewer_instructions_than_fp32_on_dot_product_cores(arm64_counts):
    for cpu in target.CPU_MODELS:
        if "dot" in cpu.extensions:
            fp32, int8 = arm64_counts[FP32, cpu.qemu_cpu], arm64_counts[INT8, cpu.qemu_cpu]
            assert int8.per_inference < 0.6 * fp32.per_inference, (cpu.qemu_cpu, int8.per_inference, fp32.per_inference)


@ARM64
def test_first_frame_costs_more_than_an_inference_and_the_weight_cache_saves_the_packing(arm64_counts):
    for (file, cpu), row in arm64_counts.items():
        assert row.first_frame > row.per_inference, (file, cpu)  # opening is never free
        if cpu not in ("cortex-a76", "cortex-a53"):
            assert row.cache_write is None and row.cache_read is None  # not asked for
            continue
        if not file.endswith(".tflite"):  # ONNX Runtime's optimized model with pre-packed weights: a shorter start
            assert row.cache_reason is None and row.cache_read < row.first_frame, (file, cpu, row.cache_reason)
            continue
        if cpu == "cortex-a53":  # LiteRT's CompiledModel runtime (the API with the cache) needs Armv8.1 atomics
            assert row.cache_reason and "lse" in row.cache_reason, row.cache_reason
        else:  # XNNPACK's cache: written once, then the packed weights are read back instead of packed again
            assert row.cache_reason is None, row.cache_reason
            assert row.cache_read < row.first_frame and row.cache_read < row.cache_write, (file, cpu)


@ARM64
def test_counts_repeat_and_agree_with_the_former_counting_emulator(arm64_counts, xs_int8_export):
    """Two runs on the new cores agree within 0.1 % (first frames too); qemu 7.2 (the emulator the older A76/A53
    figures came from) counts the same file within 0.1 % of qemu 10."""
    from runtimes.arm64.runner import run_jobs

    out = xs_int8_export[0]
    x = _golden_input(out)
    jobs = [*(j for cpu in ("cortex-a55", "cortex-a710") for j in _jobs(out, [INT8, QDQ], target.cpu_model(cpu), True)),
            *(replace(j, emulator="cross-check") for j in _jobs(out, [INT8], target.cpu_model("cortex-a76"), True))]
    for job, again in zip(jobs, run_jobs(jobs, x)):
        before = arm64_counts[job.artifact.name, job.cpu.qemu_cpu]
        assert len(again.instructions) == 1 and again.instructions[0] > 10_000_000
        assert abs(again.instructions[0] - before.instructions[0]) <= 1e-3 * before.instructions[0], job.name
        assert abs(again.first_frame.instructions - before.first_frame) <= 1e-3 * before.first_frame, job.name
    assert "qemu 7.2" in again.runtime, again.runtime


@ARM64
def test_memory_follows_the_weights_and_the_report_has_every_figure(arm64_counts, xs_int8_export, tmp_path):
    """Integer files need less memory than fp32 ones in either runtime; bench_arm64.md and the model card carry
    instructions, first frames, kernels, memory and the cheapest file of every core."""
    from benchmarks import arm64
    from exporters.app_files import model_card

    out = tmp_path / "XS"
    shutil.copytree(xs_int8_export[0], out)
    memory = {m.file: m for m in arm64.measure_files_memory(out, (FP32, INT8, QDQ, "convnextpose-XS.sim.onnx"))}
    assert all(m.status == "measured" and m.first_result_mb > 0 for m in memory.values()), memory
    assert memory[INT8].first_result_mb < memory[FP32].first_result_mb
    assert memory[QDQ].first_result_mb < memory["convnextpose-XS.sim.onnx"].first_result_mb
    data = arm64.report(out, list(arm64_counts.values()), list(memory.values()))
    md = arm64.write_reports(out, data)[1].read_text()
    for words in ("Before the first frame", "Kernels each core gets", "Memory", "x86-64", "Cheapest file per core",
                  *(c.qemu_cpu for c in target.CPU_MODELS)):
        assert words in md
    assert set(data["int8_vs_fp32"]) == {c.qemu_cpu for c in target.CPU_MODELS}
    card = model_card.render(Manifest.read(out), None, data)
    assert "## Cost on phone cores" in card and "cortex-a710" in card
