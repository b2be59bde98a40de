"""OUT/MODEL_CARD.md: what the exported files are, for whom, and how far to trust them -- generated from
the manifest (and from bench.json / bench_arm64.json once `convnextpose bench [--arch arm64]` ran), so every
figure is the manifest's or a bench's."""

from __future__ import annotations

from pathlib import Path

from common.files import write_atomic
from common.tables import format_table
from exporters.app_files.metadata import CODE_LICENSE
from judging.gates import BORDERLINE, interval_cell, kind_label
from judging.manifest import Manifest

MODEL_CARD = "MODEL_CARD.md"


def provenance(manifest: Manifest) -> str:
    """The first thing a reader must know about the weights."""
    info = manifest.checkpoint.get("synthetic_info") or {}
    if info.get("kind") == "trained-synthetic":
        return ("**These weights were trained on synthetic mannequin figures only: they are NOT a model of real "
                "people.** Use them to integrate and test the pipeline; export a checkpoint trained on people "
                "for an app.")
    if info:
        return f"**These weights are {info.get('kind')} (random): NOT a pose model.** For pipeline tests only."
    return (f"Weights: `{Path(manifest.checkpoint['path']).name}` (epoch {manifest.checkpoint.get('epoch')}), "
            "a checkpoint given by the user.")


def _artifact_rows(manifest: Manifest, bench: dict | None) -> list[tuple]:
    p50 = {r["file"]: r["latency"]["p50_ms"] for r in (bench or {}).get("backends", []) if r.get("latency")}
    rows = []
    for a in manifest.artifacts:
        v = a.verdict
        borderline = f" ({kind_label(v)})" if v.get("cost_verdict") == BORDERLINE else ""
        check = (f"fp32 check {v['conversion']['max_input_px']:.2g} <= {v['conversion']['tolerance_input_px']:.2g}"
                 if v["conversion"] else f"cost p99 {v['cost']['p99_input_px']:.2g} {interval_cell(v)} <= "
                 f"{v['budget_input_px']:g}{borderline}")
        by = " (reference evaluator)" if v.get("evaluated_by") else ""
        accumulated = next((r for r in a.verified_on if r.get("accumulation") == "fp16"), None)
        if accumulated:  # an fp16 Core ML program judged again with every sum in fp16 (a worst-case GPU / ANE)
            by += f"; every sum in fp16: p99 {accumulated['verdict']['cost']['p99_input_px']:.2g}"
        rows.append((f"`{a.file}`", a.format, a.precision, f"{a.bytes / 1e6:.1f}", check + by,
                     f"{v['cost']['p99_depth_mm']:.2g}", f"{p50[a.file]:.2f}" if a.file in p50 else "-"))
    for r in manifest.rejected:
        rows.append((f"`{r.file}`", r.format, r.precision, "-", f"REJECTED ({r.reason})", "-", "-"))
    return rows


def _where_verified(a) -> str:
    emulated = [r for r in a.verified_on if r.get("emulated")]
    if not emulated:
        return "this machine"
    words = [f"{r['cpu']} {'✓' if r.get('status') == 'passed' else '✗'}" for r in emulated]
    return "this machine, " + ", ".join(words) + " (emulated)"


def _arm64_section(manifest: Manifest) -> list[str]:
    """Where the files were judged on the phone's instruction set, and what that did to the golden tolerances."""
    measured = [a for a in manifest.artifacts if a.cross_isa_input_px]
    if not measured:
        return ["## On the phone's CPU", "",
                "Not verified on arm64 yet: `make arm64`, then `convnextpose verify OUT --arch arm64` judges every "
                ".tflite, .onnx and .ort on emulated Cortex-A55, A76, A710 and A53 cores and records the result "
                "here.", ""]
    from judging.golden import cpu_tolerance

    rows = []
    for a in manifest.artifacts:
        if a.cross_isa_input_px:
            diffs = ", ".join(f"{cpu} {px:.2g}" for cpu, px in a.cross_isa_input_px.items())
            rows.append((f"`{a.file}`", _where_verified(a), diffs, f"{cpu_tolerance(a, manifest).input_px:.2g}"))
    return ["## On the phone's CPU", "",
            "Each .tflite, .onnx and .ort run again on emulated arm64 cores (qemu user mode, the runtimes' aarch64 "
            "builds, one thread, the golden inputs) and judged with the same gates; the distance of their joints "
            "from this machine's sets the golden CPU tolerance (judging/golden.py).", "",
            format_table(("file", "verified on", "max distance from this machine's joints, input px",
                          "golden CPU tolerance, input px"), rows, markdown=True), ""]


def _gpu_section(manifest: Manifest) -> list[str]:
    """Each .tflite on LiteRT's GPU accelerator in fp16 (judging/on_gpu.py), and the fp16 file's arithmetic tag."""
    from judging.golden import delegate_tolerance
    from judging.on_gpu import ACCELERATOR

    tflites = [a for a in manifest.artifacts if a.file.endswith(".tflite")]
    if not tflites:
        return []
    lines = ["## On the phone's GPU and in fp16", ""]
    rows = []
    for a in tflites:
        gpu = next((r for r in a.verified_on if r.get("accelerator") == ACCELERATOR), None)
        if gpu is None:
            continue
        v = gpu.get("verdict") or {}
        figure = (f"cost p99 {v['cost']['p99_input_px']:.2g} <= {v['budget_input_px']:g}" if v else gpu["reason"])
        rows.append((f"`{a.file}`", "✓" if gpu["status"] == "passed" else "✗", figure,
                     "-" if gpu.get("gpu_input_px") is None else f"{gpu['gpu_input_px']:.2g}",
                     f"{delegate_tolerance(a, manifest).input_px:.2g}"))
    if rows:
        lines += ["Each .tflite run on LiteRT's GPU accelerator (`CompiledModel`, GPU, default options: fp16 "
                  "arithmetic, what a phone's GPU computes for any float file) on a software Vulkan device, judged "
                  "against its budget (a float file against fp16's); its distance from this machine's joints sets "
                  "the golden delegate tolerance.", "",
                  format_table(("file", "on the GPU", "cost in fp16 (input px)", "from this machine's joints, "
                                "input px", "golden delegate tolerance, input px"), rows, markdown=True), ""]
    else:
        lines += ["Not verified on the GPU yet: `make gpu`, then `convnextpose verify OUT --gpu` runs every .tflite "
                  "on LiteRT's GPU accelerator in fp16 (a software Vulkan device) and records the result here.", ""]
    fp16 = next((a for a in tflites if a.precision == "fp16"), None)
    tag = (fp16.details.get("fp16_arithmetic") or {}) if fp16 else {}
    if fp16 is not None and tag.get("tagged"):
        judged = tag["judged_on"]
        lines += [f"`{fp16.file}` is tagged for fp16 arithmetic (`reduced_precision_support` = {tag['tag']}): "
                  f"XNNPACK runs it in fp16 on cores with FP16 arithmetic (ARMv8.2+, e.g. Cortex-A55, A76, A710) at "
                  f"about half the instructions, in fp32 elsewhere. Judged in fp16 on emulated {judged['cpu']}: "
                  f"{judged['headline']}.", ""]
    elif fp16 is not None:
        why = f" ({tag['judged_on']['reason']})" if tag.get("judged_on") else \
            " (export with --verify-arch arm64 to judge it in fp16 on an emulated Cortex-A76 and tag it)"
        lines += [f"`{fp16.file}` is not tagged for fp16 arithmetic{why}: XNNPACK runs it in fp32 everywhere.", ""]
    return lines


def _phone_cost_section(arm64: dict | None) -> list[str]:
    """What each file costs on each emulated core (benchmarks/arm64.py's report), as an app engineer reads it."""
    if not arm64 or not arm64.get("rows"):
        return []
    cores = list(dict.fromkeys(e["cpu"] for e in arm64["rows"]))
    per: dict[str, dict[str, dict]] = {}
    for e in arm64["rows"]:
        per.setdefault(e["file"], {})[e["cpu"]] = e
    memory = {m["file"]: m for m in arm64.get("memory", {}).get("rows", []) if m.get("status") == "measured"}

    def m(n: float | None) -> str:
        return "-" if n is None else f"{n / 1e6:.0f}"

    rows = []
    for file, by_core in per.items():
        cells = [f"{m(e['instructions'][0] if e['instructions'] else None)} / {m(e.get('first_frame'))} / "
                 f"{m(e.get('cache_read'))}" if (e := by_core.get(cpu)) else "-" for cpu in cores]
        mem = memory.get(file)
        rows.append((f"`{file}`", *cells, "-" if mem is None else f"{mem['first_result_mb']:.0f}"))
    best = {}
    for e in arm64["rows"]:
        if e["instructions"] and (e["cpu"] not in best or e["instructions"][0] < best[e["cpu"]]["instructions"][0]):
            best[e["cpu"]] = e
    cost = arm64.get("precision_cost", {})
    ratios = arm64.get("int8_vs_fp32", {})
    return ["## Cost on phone cores", "",
            "`convnextpose bench OUT --arch arm64` (bench_arm64.md): M instructions per inference / from opening the "
            "file to its first result / the same from the runtime's warm weight cache, on emulated cores (one "
            "thread: a cost, not phone time); memory: peak resident MB above the imported runtime while opening "
            "and running the file once, measured on the bench machine (x86-64; bench_arm64.md says where arm64 "
            "differs).", "",
            format_table(("file", *cores, "memory MB (x86)"), rows, markdown=True), "",
            "Cheapest file per core for CPU inference: " + "; ".join(
                f"{cpu} `{e['file']}` ({cost.get(e['file'], e['precision'])})" for cpu, e in best.items()) + ".",
            "Integer / fp32 instructions per inference (TFLite): " + "; ".join(
                f"{cpu} {v['litert']['ratio']:.2f}" for cpu, v in ratios.items() if "litert" in v) + ".", ""]


def _accelerator_section(manifest: Manifest) -> list[str]:
    """Where each file runs accelerated, by each runtime's own checker (judging/readiness.py)."""
    from judging.readiness import summary

    rows = [(f"`{a.file}`", summary(a.readiness)) for a in manifest.artifacts if a.readiness]
    if not rows:
        return []
    return ["## On the phone's accelerators", "",
            "Asked of each runtime's own checker at export: ONNX Runtime's mobile usability checker (NNAPI, Core ML "
            "NeuralNetwork and ML Program: \"whole\" is one partition holding every node; otherwise nodes taken), "
            "TensorFlow's GPU-delegate analyzer and, for integer files, the ops that still compute in float (what "
            "an NPU delegate hands back to the CPU), the Core ML target, ExecuTorch's XNNPACK delegation. A "
            "checker's yes is a readiness check, not a run on the device.", "",
            format_table(("file", "runs accelerated where"), rows, markdown=True), ""]


def render(manifest: Manifest, bench: dict | None = None, arm64: dict | None = None) -> str:
    spec, inp, out = manifest.spec, manifest.input, manifest.output
    judged = manifest.verification
    n_judged = judged["synthetic"] if judged["judged_on"] == "synthetic" else len(judged["photos"])
    machine = (bench or {}).get("machine", {})
    lines = [
        f"# ConvNeXtPose {manifest.variant} — model card",
        "",
        provenance(manifest),
        "",
        "| | |",
        "|---|---|",
        f"| variant | {manifest.variant}: depths {list(spec.depths)}, dims {list(spec.dims)}, head "
        f"{spec.head_channels} channels, heatmap {'×'.join(map(str, spec.heatmap_shape))} |",
        f"| parameters | {spec.params:,} |",
        f"| compute | {spec.macs / 1e9:.2f} GMACs per {spec.input_size}×{spec.input_size} crop |",
        f"| checkpoint sha256 | `{manifest.checkpoint['sha256']}` |",
        f"| exported by | convnextpose-export {manifest.versions.get('convnextpose-export', '?')} (torch "
        f"{manifest.versions.get('torch')}, onnx2tf {manifest.versions.get('onnx2tf')}, coremltools "
        f"{manifest.versions.get('coremltools')}) |",
        "",
        "## Intended use",
        "",
        f"Single-person 3-D pose: one person, a square crop around them resized to "
        f"{spec.input_size}×{spec.input_size}, RGB; the output is {spec.joints} joints ({manifest.joints['set']} "
        "order) with x, y in the crop and depth relative to the root joint (Pelvis). Not for: several people in "
        "one crop, crops that cut the person off, absolute distance to the camera.",
        "",
        "## Inputs and outputs",
        "",
        f"- input `{inp['name']}`: {inp['preprocessing']}; per format: "
        f"{', '.join(f'{k} {v}' for k, v in inp['layout_per_format'].items())} (image: an RGB picture, pixel "
        "values 0..255, scaled inside the model)",
        f"- output `{out['name']}` {out['shape']}: {out['units']}",
        f"- to the crop: `{out['to_input_pixels']}`; to the photo: `{out['to_original_image']}`; "
        f"depth: `{out['to_depth_mm']}`",
        "- joint names in order: " + ", ".join(manifest.joints["names"]),
        "",
        "## Files",
        "",
        f"Each file judged here against PyTorch (docs/judging.md): fp32 files against the exact "
        f"reference within 10× this checkpoint's fp32 noise floor; fp16 and integer files by their cost, the p99 "
        f"2-D joint error in input px on {n_judged} {judged['judged_on']} inputs (more where the first ones could "
        "not decide), against a budget, with its 95 % interval (a bootstrap over images -- or photos, their crops "
        "resampled together -- widened for few of them): an interval that straddles the budget is labelled "
        "borderline -- whether such a file is within its budget depends on which images were drawn; on a user's "
        "photos, \"borderline: N photos\" says those photos cannot decide.",
        "",
        format_table(("file", "format", "precision", "MB", "check (input px)", "depth p99 mm", "p50 ms"),
                     _artifact_rows(manifest, bench), markdown=True),
        "",
        ("Latency: " + (f"`convnextpose bench` on {machine.get('cpu')}, {machine.get('threads')} threads, one "
                        "process per file." if bench else "not measured yet (`make bench`).")),
        "",
        *_arm64_section(manifest),
        *_gpu_section(manifest),
        *_phone_cost_section(arm64),
        *_accelerator_section(manifest),
        "## Limitations",
        "",
        "- Core ML figures come from this project's reference evaluator (the saved model read back and run op by "
        "op in PyTorch) unless the export ran on macOS: Core ML itself did not run, and no Core ML latency is given.",
        "- Latencies are x86 CPU figures (ONNX Runtime, LiteRT with XNNPACK), not phone timings; compare files "
        "as ratios. For the phone's instruction set, `convnextpose bench OUT --arch arm64` counts instructions per "
        "inference on emulated arm64 cores (bench_arm64.md): a cost, not a time.",
        "- Precision costs are measured against PyTorch fp32 on the inputs above, not against ground truth: they "
        "say what converting costs, not how accurate the model is.",
        "",
        "## Licence",
        "",
        f"Code: {CODE_LICENSE} (`LICENSE`). Weights: "
        + ("made by convnextpose-export, " + CODE_LICENSE if manifest.checkpoint.get("synthetic")
           else "the licence of the checkpoint they came from") + ".",
        "",
    ]
    return "\n".join(lines)


def write(out_dir: Path, manifest: Manifest, bench: dict | None = None, arm64: dict | None = None) -> Path:
    path = Path(out_dir) / MODEL_CARD
    text = render(manifest, bench, arm64)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    return path
