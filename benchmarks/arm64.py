"""`convnextpose bench OUT --arch arm64`: what each .tflite, .onnx and .ort costs on each emulated phone core --
instructions per inference, instructions before the first result (with and without the runtime's weight
cache), the kernels the core gets -- and the memory each file needs (measured natively, benchmarks/memory.py).

Counted by the plugin runtimes/arm64/insn_count.c between marks the worker sets (imports are never
counted), under qemu 10 built with plugins (runtimes/arm64/target.py), address-space randomisation off,
one thread. Per file and core, one emulator process counts the first frame (from before opening the file
to its first result: parsing, XNNPACK's or MLAS's weight packing, the first inference's one-off work) and
then one inference; two more open it through the runtime's weight cache, the first writing the cache (an
app's first start after install), the second reading it (every later start). Ratios are to TFLite fp32 and
ONNX Runtime fp32 on the same core, so they compare files, not emulators. The x86 latency bench stays what
it is: this machine's milliseconds.

Each report row is one file on one core; a file's ``precision`` travels with it, so a file that computes
differently on some cores (e.g. an fp16-accumulation tag) is one more row, and a precision column is
one more key of :class:`CountRow`.
"""

from __future__ import annotations

import bisect
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.memory import MEMORY_LABEL, MemoryRow, measure_memory
from common.errors import ConvNeXtPoseError
from common.files import write_atomic, write_json_atomic
from common.machine import cpu_name
from common.tables import format_table
from judging.cross_isa import arm64_candidates
from judging.golden import GOLDEN_DIR, GOLDEN_JSON
from judging.manifest import Artifact, Manifest
from runtimes.arm64.runner import DEFAULT_TIMEOUT_S, EmulatedJob, EmulatedRun, EmulationFailed, run_jobs
from runtimes.arm64.target import CPU_MODELS, CpuModel, ensure_ready

BENCH_ARM64_JSON = "bench_arm64.json"
BENCH_ARM64_MD = "bench_arm64.md"
#: Counted inferences per file and core (after the first frame): the count repeats to < 0.01 %.
COUNTED_INFERENCES = 1
NOT_PHONE_TIME = ("Guest instructions on an emulated core (qemu user mode, one thread): a deterministic measure of "
                  "the work each file asks of that instruction set, not phone time -- memory, caches and a core's "
                  "width decide the milliseconds on a real phone.")
#: Weight caches: what each runtime offers (worker.py) in a few words.
CACHE_WORDS = {"litert": "XNNPACK weight cache (CompiledModel API, `xnnpack_weight_cache_path`)",
               "onnxruntime": "optimized model saved with pre-packed weights "
                              "(`session.save_external_prepacked_constant_initializers`)"}
#: Kernel families shown per profiled file and core.
PROFILE_TOP = 8
#: Assembler-local labels that nm lists as code symbols (KleidiAI's "label_3", mapping symbols "$x").
_LOCAL_LABEL = re.compile(r"^(\$|\.L|label_\d+$)")


@dataclass(frozen=True)
class CountRow:
    file: str
    precision: str
    runtime: str
    cpu: str
    instructions: tuple[int, ...]  # per counted inference
    status: str  # "counted" | "failed"
    reason: str | None = None
    first_frame: int | None = None  # opening the file to its first result, the runtime's usual API
    cache_write: int | None = None  # the same through the weight cache, filling it
    cache_read: int | None = None  # the same from the filled cache
    cache_reason: str | None = None  # why a cache figure is missing
    mix: dict[str, int] = field(default_factory=dict)  # instruction classes of the counted inference
    kernels: tuple[tuple[str, int], ...] = ()  # profile: (symbol, instructions), largest first

    @property
    def per_inference(self) -> float | None:
        return float(np.median(self.instructions)) if self.instructions else None


def first_golden_input(out_dir: Path) -> np.ndarray:
    path = Path(out_dir) / GOLDEN_DIR / GOLDEN_JSON
    if not path.is_file():
        raise ConvNeXtPoseError(f"{path} not found: the arm64 bench counts on the first golden input; re-export")
    entry = json.loads(path.read_text())["inputs"][0]
    return np.fromfile(path.parent / entry["nchw"]["file"], dtype="<f4").reshape(entry["nchw"]["shape"])


# ---- where the instructions go (profile) ------------------------------------------------------------

def _symbols(library: str, cache: dict[str, tuple[list[int], list[str]]]) -> tuple[list[int], list[str]]:
    """Sorted (addresses, names) of a library's defined function symbols (nm reads aarch64 ELF here)."""
    if library not in cache:
        try:
            text = subprocess.run(["nm", "--defined-only", "-C", library], capture_output=True, text=True,
                                  timeout=120).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        pairs = sorted((int(w[0], 16), w[2]) for w in (line.split(" ", 2) for line in text.splitlines())
                       if len(w) == 3 and w[1] in "tTW" and not _LOCAL_LABEL.match(w[2]))
        cache[library] = ([a for a, _ in pairs], [n for _, n in pairs])
    return cache[library]


def attribute(blocks: dict[int, int], memory_map: str) -> list[tuple[str, int]]:
    """Profiled instructions per symbol ("library: symbol"; stripped libraries by name only), largest first."""
    maps = []  # (start, end, path, load base)
    bases: dict[str, int] = {}
    for line in memory_map.splitlines():
        words = line.split()
        if len(words) < 6 or not words[5].startswith("/"):
            continue
        start, end = (int(v, 16) for v in words[0].split("-"))
        if int(words[2], 16) == 0:
            bases.setdefault(words[5], start)
        maps.append((start, end, words[5]))
    starts = sorted(maps)
    keys = [m[0] for m in starts]
    cache: dict[str, tuple[list[int], list[str]]] = {}
    totals: dict[str, int] = {}
    for address, n in blocks.items():
        i = bisect.bisect_right(keys, address) - 1
        name = "(anonymous: Python, JIT)"
        if i >= 0 and starts[i][0] <= address < starts[i][1]:
            path = starts[i][2]
            name = Path(path).name
            addrs, names = _symbols(path, cache)
            j = bisect.bisect_right(addrs, address - bases.get(path, starts[i][0])) - 1
            if j >= 0:
                name = f"{name}: {names[j]}"
        totals[name] = totals.get(name, 0) + n
    return sorted(totals.items(), key=lambda kv: -kv[1])


def kernel_family(symbol: str) -> tuple[str, str | None]:
    """("xnn_qs8_qc8w_gemm_minmax_fp32", "neoni8mm") for an XNNPACK micro-kernel; (symbol, None) otherwise."""
    name = symbol.split(": ", 1)[-1]
    if name.startswith("xnn_") and "_ukernel_" in name:
        return name.split("_ukernel_")[0], name.rsplit("__", 1)[1] if "__" in name else None
    return symbol, None


# ---- counting --------------------------------------------------------------------------------------

def _counted(run: EmulatedRun | EmulationFailed, inferences: int) -> str | None:
    if isinstance(run, EmulationFailed):
        return str(run)
    if len(run.instructions) != inferences or run.first_frame is None:
        return f"{len(run.instructions)} counted spans for {inferences} inferences"
    return None


def count_instructions(out_dir: Path, cpus: tuple[CpuModel, ...] = CPU_MODELS, only: tuple[str, ...] = (),
                       inferences: int = COUNTED_INFERENCES, timeout_s: float = DEFAULT_TIMEOUT_S,
                       caches: bool = True, profile: bool = False,
                       cache_cores: tuple[str, ...] | None = None) -> list[CountRow]:
    """Every .tflite/.onnx/.ort (or ``only`` those) on every core: first frame and ``inferences`` counted
    inferences; with ``caches`` also the first frame through the runtime's weight cache (written, then read),
    on every core or on ``cache_cores``; with ``profile`` where the instructions of LiteRT files go, by symbol."""
    ensure_ready()
    out_dir = Path(out_dir)
    manifest = Manifest.read(out_dir)
    manifest.refuse_tampered(out_dir)
    arts = [a for a in arm64_candidates(manifest.artifacts) if not only or a.file in only]
    if not arts:
        raise ConvNeXtPoseError(f"{out_dir}: no .tflite or .onnx artifact to count"
                                + (f" among {', '.join(only)}" if only else ""))
    x = np.repeat(first_golden_input(out_dir), inferences, axis=0)
    pairs = [(a, cpu) for a in arts for cpu in cpus]
    counting = [EmulatedJob(out_dir / a.file, a.runtime, a.layout, cpu, count=True,
                            profile=profile and a.runtime == "litert") for a, cpu in pairs]
    with tempfile.TemporaryDirectory(prefix="weight-caches-") as tmp:
        suffix = {"litert": ".xnnpack-cache", "onnxruntime": ".optimized.onnx"}
        cache_of = {(a.file, cpu.qemu_cpu): Path(tmp) / f"{Path(a.file).stem}-{cpu.qemu_cpu}{suffix[a.runtime]}"
                    for a, cpu in pairs}

        cached = [(a, cpu) for a, cpu in pairs if caches and (cache_cores is None or cpu.qemu_cpu in cache_cores)]

        def cache_jobs(phase: str) -> list[EmulatedJob]:
            return [EmulatedJob(out_dir / a.file, a.runtime, a.layout, cpu, count=True, steady=False,
                                cache=(cache_of[a.file, cpu.qemu_cpu], phase)) for a, cpu in cached]

        results = run_jobs(counting + cache_jobs("write"), x, timeout_s, describe="arm64 instruction counts")
        runs = results[:len(counting)]
        written = dict(zip(((a.file, cpu.qemu_cpu) for a, cpu in cached), results[len(counting):]))
        read = dict(zip(((a.file, cpu.qemu_cpu) for a, cpu in cached),
                        run_jobs(cache_jobs("read"), x[:1], timeout_s, describe="arm64 weight caches") if cached
                        else []))
    rows = []
    for (art, cpu), run in zip(pairs, runs):
        failed = _counted(run, len(x))
        if failed:
            rows.append(CountRow(art.file, art.precision, art.runtime, cpu.qemu_cpu, (), "failed", failed))
            continue
        cache: dict = {}
        if (art.file, cpu.qemu_cpu) in written:
            w, r = written[art.file, cpu.qemu_cpu], read[art.file, cpu.qemu_cpu]
            reasons = [f"{phase}: {why}" for phase, why in (("writing", _counted(w, 0)), ("reading", _counted(r, 0)))
                       if why]
            cache = {"cache_write": None if _counted(w, 0) else w.first_frame.instructions,
                     "cache_read": None if _counted(r, 0) else r.first_frame.instructions,
                     "cache_reason": "; ".join(reasons) or None}
            if not reasons and not np.allclose(r.outputs, run.outputs[:1], atol=1e-3):
                cache["cache_reason"] = "the cached file's first result differs from the file's"
        kernels = ()
        if run.job.profile and run.spans and run.spans[0].blocks and run.memory_map:
            kernels = tuple(attribute(run.spans[0].blocks, run.memory_map)[:40])
        rows.append(CountRow(art.file, art.precision, art.runtime, cpu.qemu_cpu, run.instructions, "counted",
                             first_frame=run.first_frame.instructions, mix=dict(run.spans[0].mix), kernels=kernels,
                             **cache))
    return rows


def measure_files_memory(out_dir: Path, only: tuple[str, ...] = ()) -> list[MemoryRow]:
    manifest = Manifest.read(out_dir)
    arts = [a for a in arm64_candidates(manifest.artifacts) if not only or a.file in only]
    return measure_memory([(Path(out_dir) / a.file, a.runtime, a.layout) for a in arts], first_golden_input(out_dir))


# ---- the report ------------------------------------------------------------------------------------

def _fp32_of(rows: list[CountRow], runtime: str, cpu: str, manifest: Manifest) -> float | None:
    """The fp32 file of ``runtime`` on ``cpu``: the simplified ONNX for ONNX Runtime (what phones get)."""
    formats = {a.file: a.format for a in manifest.artifacts}
    for row in rows:
        if row.runtime == runtime and row.cpu == cpu and row.precision == "fp32" and row.per_inference:
            if runtime != "onnxruntime" or formats.get(row.file) == "onnx-simplified":
                return row.per_inference
    return None


def precision_cost(art: Artifact | None) -> str:
    """The file's measured precision cost, as its export judged it (input px)."""
    if art is None:
        return "-"
    v = art.verdict
    if v.get("conversion"):
        return f"fp32: {v['conversion']['max_input_px']:.2g} input px from PyTorch"
    cost = v.get("cost") or {}
    p99 = cost.get("p99_input_px", float("nan"))
    text = f"{art.precision}: p99 {p99:.2g} input px (budget {v['budget_input_px']:g})"
    tagged = (art.details or {}).get("fp16_arithmetic") or {}
    on_core = ((tagged.get("judged_on") or {}).get("verdict") or {}).get("cost") or {}
    if on_core.get("p99_input_px") is not None:  # cores with FP16 arithmetic compute a tagged file in fp16
        text += f"; p99 {on_core['p99_input_px']:.2g} in fp16 arithmetic ({tagged['judged_on']['cpu']})"
    return text


def report(out_dir: Path, rows: list[CountRow], memory: list[MemoryRow] | None = None) -> dict:
    manifest = Manifest.read(out_dir)
    record = ensure_ready()
    entries = []
    for row in rows:
        tflite = _fp32_of(rows, "litert", row.cpu, manifest)
        ort = _fp32_of(rows, "onnxruntime", row.cpu, manifest)
        n = row.per_inference
        entries.append({**asdict(row), "m_instructions": None if n is None else n / 1e6,
                        "vs_tflite_fp32": None if n is None or not tflite else n / tflite,
                        "vs_onnxruntime_fp32": None if n is None or not ort else n / ort})
    arts = {a.file: a for a in manifest.artifacts}
    data = {"about": NOT_PHONE_TIME, "counted_by": record.emulators["count"], "host_cpu": cpu_name(),
            "packages": record.packages, "cpus": {c.qemu_cpu: c.label for c in CPU_MODELS},
            "caches": CACHE_WORDS, "rows": entries,
            "memory": {"about": MEMORY_LABEL, "rows": [asdict(m) for m in memory or []]},
            "precision_cost": {f: precision_cost(arts.get(f)) for f in dict.fromkeys(r.file for r in rows)}}
    data["int8_vs_fp32"] = int8_vs_fp32(data)
    return data


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _cores(data: dict) -> list[str]:
    return list(dict.fromkeys(e["cpu"] for e in data["rows"]))


def _by_file(data: dict) -> dict[str, dict[str, dict]]:
    table: dict[str, dict[str, dict]] = {}
    for e in data["rows"]:
        table.setdefault(e["file"], {})[e["cpu"]] = e
    return table


def _m(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _file_by_core_table(data: dict, cell: Callable[[dict | None], str]) -> str:
    """One row per file, one column per core; ``cell`` formats a (file, core) row of ``data`` or None."""
    cores = _cores(data)
    rows = [(file, *(cell(per.get(cpu)) for cpu in cores)) for file, per in _by_file(data).items()]
    return format_table(("file", *cores), rows)


def _instructions_cell(e: dict | None) -> str:
    if e is None:
        return ""
    if e["status"] != "counted":
        return f"failed: {e['reason']}"
    return f"{e['m_instructions']:.1f} ({_cell(e['vs_tflite_fp32'], '.2f')})"


def tables(data: dict) -> str:
    """M instructions per inference, file x core, with the ratio to TFLite fp32 on that core."""
    return _file_by_core_table(data, _instructions_cell)


def _first_frame_cell(e: dict | None) -> str:
    if e is None or e["status"] != "counted":
        return "-"
    cached = f"{_m(e['cache_write'])} / {_m(e['cache_read'])}" if e["cache_reason"] is None else "failed"
    return f"{_m(e['first_frame'])} | {cached}"


def first_frame_table(data: dict) -> str:
    """M instructions from opening the file to its first result: usual API / cache written / cache read."""
    failures = sorted({f"{e['file']} on {e['cpu']}: {e['cache_reason']}" for e in data["rows"]
                       if e["status"] == "counted" and e["cache_reason"]})
    return _file_by_core_table(data, _first_frame_cell) + "".join(f"\ncache failed: {f}" for f in failures)


def _kernels_cell(e: dict | None) -> str:
    if e is None or not e.get("mix") or not e["instructions"]:
        return "-"
    n = e["instructions"][0]
    shares = [f"{k} {100 * v / n:.0f}%" if v / n >= 0.005 else f"{k} <1%" for k, v in e["mix"].items() if v]
    return ", ".join(shares) or "none"


def kernels_table(data: dict) -> str:
    """Per file and core: the share of its inference's instructions in each class the core's kernels use."""
    return _file_by_core_table(data, _kernels_cell)


def memory_table(data: dict) -> str:
    rows = [(m["file"], m["runtime"], _cell(m["open_mb"], ".1f"), _cell(m["first_result_mb"], ".1f"),
             _cell(m["runtime_mb"], ".0f")) if m["status"] == "measured" else (m["file"], m["runtime"], "failed",
                                                                                 m["reason"], "")
            for m in data["memory"]["rows"]]
    return format_table(("file", "runtime", "opened, MB", "opened and run once, MB", "runtime alone, MB"), rows)


def profile_lines(data: dict) -> list[str]:
    """Where a profiled file's inference goes (kernels by family, with the ISA variant the core got)."""
    lines = []
    for e in data["rows"]:
        if not e.get("kernels") or not e["instructions"]:
            continue
        n = e["instructions"][0]
        families: dict[str, int] = {}
        for symbol, count in e["kernels"]:
            family, isa = kernel_family(symbol)
            label = f"{family} [{isa}]" if isa else family
            families[label] = families.get(label, 0) + count
        top = sorted(families.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]
        lines.append(f"- `{e['file']}` on {e['cpu']}: " + "; ".join(f"{k} {100 * v / n:.0f}%" for k, v in top))
    return lines


def cheapest(data: dict, runtime: str | None = None) -> dict[str, str]:
    """Per core model: the file (of ``runtime``, or any) with the fewest instructions per inference."""
    best: dict[str, tuple[float, str]] = {}
    for e in data["rows"]:
        if e["m_instructions"] is None or (runtime and e["runtime"] != runtime):
            continue
        if e["cpu"] not in best or e["m_instructions"] < best[e["cpu"]][0]:
            best[e["cpu"]] = (e["m_instructions"], e["file"])
    return {cpu: file for cpu, (_, file) in best.items()}


def int8_vs_fp32(data: dict) -> dict[str, dict]:
    """Per core: the cheapest integer file of each runtime against that runtime's fp32 file."""
    out: dict[str, dict] = {}
    for cpu in _cores(data):
        for runtime, ratio_key in (("litert", "vs_tflite_fp32"), ("onnxruntime", "vs_onnxruntime_fp32")):
            ints = [e for e in data["rows"] if e["cpu"] == cpu and e["runtime"] == runtime and
                    e["precision"].startswith("int8") and e[ratio_key] is not None]
            if ints:
                best = min(ints, key=lambda e: e[ratio_key])
                out.setdefault(cpu, {})[runtime] = {"file": best["file"], "ratio": best[ratio_key]}
    return out


def write_reports(out_dir: Path, data: dict) -> list[Path]:
    out_dir = Path(out_dir)
    write_json_atomic(data, out_dir / BENCH_ARM64_JSON)
    cost = data.get("precision_cost", {})
    advice = [f"- {words}: " + "; ".join(f"{cpu} `{file}` ({cost.get(file, '-')})"
                                         for cpu, file in cheapest(data, runtime).items())
              for words, runtime in (("any runtime", None), ("TFLite", "litert"), ("ONNX Runtime", "onnxruntime"))]
    ratios = ["- " + "; ".join(f"{words} {v[runtime]['ratio']:.2f} (`{v[runtime]['file']}`)"
                               for words, runtime in (("TFLite", "litert"), ("ONNX Runtime", "onnxruntime"))
                               if runtime in v) + f" on {cpu}" for cpu, v in data.get("int8_vs_fp32", {}).items()]
    sections = [
        f"# arm64 instruction counts\n\n{NOT_PHONE_TIME}\n\nCounted by {data['counted_by']} on this machine "
        f"({data['host_cpu']}); runtimes inside: {', '.join(f'{k} {v}' for k, v in data['packages'].items())}. "
        "Cores: " + "; ".join(f"{k}: {v}" for k, v in data.get("cpus", {}).items()) + ".",
        f"## Instructions per inference\n\nM instructions (ratio to TFLite fp32 on the same core):\n\n```\n"
        f"{tables(data)}\n```",
        "## Integer against fp32\n\nThe cheapest integer file's instructions per inference over its runtime's fp32 "
        "file's, per core:\n" + "\n".join(ratios),
        "## Before the first frame\n\nM instructions from before opening the file to its first result (parsing, "
        "weight packing, the first inference's one-off work, and that inference; not the runtime's import). "
        "`usual | cache written / cache read`: the runtime's usual API (TFLite Interpreter, ONNX Runtime "
        "InferenceSession), then through its weight cache -- " + "; ".join(f"{k}: {v}" for k, v in
                                                                         data.get("caches", {}).items()) +
        " -- on the first start (writing it) and on later starts (reading it):\n\n"
        f"```\n{first_frame_table(data)}\n```",
        "## Kernels each core gets\n\nShare of an inference's instructions that are dot-product (SDOT/UDOT), "
        "int8 matrix-multiply (SMMLA/USMMLA/USDOT: `i8mm`), FP16 arithmetic, BF16 or SVE instructions "
        f"(runtimes/arm64/insn_count.c):\n\n```\n{kernels_table(data)}\n```",
    ]
    if profile_lines(data):
        sections.append("## Where the instructions go (LiteRT, by XNNPACK kernel family [variant])\n\n"
                        + "\n".join(profile_lines(data)))
    if data["memory"]["rows"]:
        sections.append(f"## Memory\n\n{data['memory']['about'][0].upper()}{data['memory']['about'][1:]}; "
                        f"benchmarks/memory.py says where arm64 differs:\n\n```\n{memory_table(data)}\n```")
    sections.append("## Cheapest file per core\n\nFewest instructions per inference (the arm64 side of a choice "
                    "for phones), with the file's precision cost as its export judged it:\n" + "\n".join(advice))
    text = "\n\n".join(sections) + "\n"
    write_atomic(out_dir / BENCH_ARM64_MD, lambda tmp: Path(tmp).write_text(text))
    return [out_dir / BENCH_ARM64_JSON, out_dir / BENCH_ARM64_MD]
