"""bench.md and PNG plots from bench.json, and the comparison of two bench.json files."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.significance import P99Difference
from common.errors import ConvNeXtPoseError
from common.tables import format_table
from judging.gates import interval_cell

BENCH_JSON, BENCH_MD = "bench.json", "bench.md"
STATUS_MARK = {"passed": "✅", "parity only": "❎", "failed": "❌"}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


GROUP_WORDS = {"photos": "photo crops", "synthetic": "fresh synthetic-task images (the weights' training distribution)",
               "random": "noise images"}


def judged_group(bench: dict) -> str:
    """The input group the headline parity columns come from (older bench.json files: photos)."""
    return bench["inputs"].get("judged_on", "photos")


def judged_parity(bench: dict, row: dict) -> dict | None:
    """Integer rows: their own judged inputs (disjoint from calibration); others: the judged group."""
    return row.get("parity_int8_judged") or row.get(f"parity_{judged_group(bench)}")


def _adaptive_note(row: dict) -> str:
    adaptive = row["adaptive"]
    layers, last = adaptive["float_layers"], adaptive["attempts"][-1]
    here = f"; speed-up over TFLite fp32 here {1 / row['ratio_to_tflite_fp32']:.2f}x" \
        if row.get("ratio_to_tflite_fp32") else ""
    return (f"- {row['backend']}: {len(layers)} of {len(adaptive['sensitivity_p99_input_px'])} layers kept float "
            f"({', '.join(layers)}; {last['float_mac_share']:.0%} of the multiply-accumulates){here}")


def markdown(bench: dict) -> str:
    roof = bench["roofline"]
    synthetic = bench["checkpoint"].get("synthetic_info") or {}
    weights = f"synthetic {synthetic.get('kind')} weights" if bench["checkpoint"].get("synthetic") else "checkpoint"
    lines = [
        f"# ConvNeXtPose {bench['variant']} benchmark",
        "",
        f"{bench['machine']['cpu']}, {bench['settings']['threads']} threads, one process per backend; "
        f"weights: {weights} (sha256 {bench['checkpoint']['sha256'][:12]}); parity vs PyTorch fp32 on "
        f"{bench['inputs'][f'n_{judged_group(bench)}']} {GROUP_WORDS[judged_group(bench)]} "
        f"(2-D joint error in px of the {bench['spec']['input_size']}-px input crop, depth in mm; the other "
        f"groups are in bench.json).",
        "",
        f"Latencies are this machine's ({bench['machine']['cpu']}), not a phone's: which file or runtime costs less on "
        "the phone's instruction set is what `convnextpose bench OUT --arch arm64` counts (bench_arm64.md), and "
        "the two rankings can differ.",
        "",
    ]
    notes, rows = [], []
    for row in bench["backends"]:
        lat, par = row.get("latency"), judged_parity(bench, row)
        if row.get("reason"):
            notes.append(f"- {row['backend']}: {row['reason']}")
        verdict = row.get("verdict") or {}
        if row.get("adaptive"):
            notes.append(_adaptive_note(row))
        if row["status"] == "failed" and verdict.get("reason"):
            notes.append(f"- {row['backend']}: rejected, {verdict['reason']}")
        rows.append((row["backend"], row["format"], row["precision"], _fmt(row["size_mb"] or None, ".1f"),
                     STATUS_MARK[row["status"]], _fmt(par and par["p99_input_px"], ".2g"),
                     (interval_cell(verdict) + (f" {verdict['cost_verdict']}" if verdict.get("cost_verdict") else ""))
                     or "-",
                     _fmt(par and par["max_input_px"], ".2g"), _fmt(par and par["p99_depth_mm"], ".2g"),
                     _fmt(par and par["pck_1_input_px"], ".3f"), _fmt(verdict.get("budget_input_px"), "g"),
                     _fmt(lat and lat["p50_ms"], ".2f"), _fmt(lat and lat["p90_ms"], ".2f"),
                     _fmt(lat and lat["fps"], ".1f"), _fmt(row.get("ratio_to_ort"), ".2f"),
                     _fmt(row.get("ratio_to_tflite_fp32"), ".2f")))
    lines.append(format_table(("backend", "format", "precision", "size MB", "status", "p99 input px",
                               "p99 95 % interval, vs budget", "max input px",
                               "depth p99 mm", "PCK@1px", "budget px", "p50 ms", "p90 ms", "FPS", "ratio to ORT",
                               "ratio to TFLite fp32"), rows, markdown=True))
    if roof.get("ort_gflops"):
        lines += ["", f"ONNX Runtime ({roof['ort_backend']}): {roof['ort_gflops']:.1f} GFLOP/s = "
                      f"{100 * roof['ort_share_of_gemm']:.0f}% of this machine's fp32 GEMM "
                      f"({roof['gemm_gflops']:.1f} GFLOP/s, {roof['library']}, n={roof['n']})."]
    integer = [r for r in bench["backends"] if r.get("gops")]
    if integer and roof.get("int8_gemm_gops"):
        lines += ["", f"Integer files against this machine's int8 GEMM ({roof['int8_gemm_gops']:.0f} GOP/s, "
                      f"{roof.get('int8_library', 'fbgemm u8 x s8')}, n={roof['n']}; "
                      f"{2 * bench['spec']['macs'] / 1e9:.2f} GOP per image):"]
        lines += [f"- {r['backend']}: {r['gops']:.0f} GOP/s = {100 * r['share_of_int8_gemm']:.0f}% of it"
                  + (f"; p99 vs ONNX Runtime int8 {P99Difference(**r['p99_vs_onnx_int8']).describe()}"
                     if r.get("p99_vs_onnx_int8") else "") for r in integer]
    ready = [(row["backend"], f"`{row['file']}`", row["accelerated_where"]) for row in bench["backends"]
             if row.get("accelerated_where")]
    if ready:
        lines += ["", "Runs accelerated where (each runtime's own checker at export: ONNX Runtime's mobile usability "
                      "checker, TensorFlow's GPU-delegate analyzer, Core ML targets, ExecuTorch's delegation; the "
                      "manifest's `readiness` holds the details):", "",
                  format_table(("backend", "file", "runs accelerated where"), ready, markdown=True)]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot_latency(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in bench["backends"] if r.get("latency")]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    names = [r["backend"] for r in rows]
    p50 = [r["latency"]["p50_ms"] for r in rows]
    p90 = [r["latency"]["p90_ms"] - r["latency"]["p50_ms"] for r in rows]
    ax.barh(names, p50, xerr=[[0] * len(rows), p90], capsize=4, color="#4C72B0")
    ax.invert_yaxis()
    ax.set_xlabel(f"latency ms (bar p50, whisker p90), {bench['settings']['threads']} threads")
    ax.set_title(f"ConvNeXtPose {bench['variant']}: latency per backend")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_joint_error(bench: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in bench["backends"] if judged_parity(bench, r) and r["backend"] != "pytorch"]
    names = bench["joint_names"]
    fig, ax = plt.subplots(figsize=(10, 4))
    for r in rows:
        errors = [max(e, 1e-7) for e in judged_parity(bench, r)["per_joint_mean_px"]]  # log axis: floor exact zeros
        ax.plot(range(len(names)), errors, marker="o", label=r["backend"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean 2-D error vs PyTorch fp32 (heatmap px)")
    group = GROUP_WORDS[judged_group(bench)].split(" (")[0]
    ax.set_title(f"ConvNeXtPose {bench['variant']}: per-joint error on {group}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(bench: dict, out_dir: Path) -> None:
    (out_dir / BENCH_MD).write_text(markdown(bench))
    plot_latency(bench, out_dir / "bench_latency.png")
    plot_joint_error(bench, out_dir / "bench_joint_error.png")


def _read_bench(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConvNeXtPoseError(f"{path}: not a readable bench.json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("backends"), list):
        raise ConvNeXtPoseError(f"{path}: not a bench.json (no 'backends' list)")
    return data


def compare(old_path: Path, new_path: Path) -> str:
    """Per backend: p50 latency and parity change from old to new bench.json."""
    old, new = (_read_bench(Path(p)) for p in (old_path, new_path))
    before = {r["backend"]: r for r in old["backends"]}
    rows = []
    for row in new["backends"]:
        prev = before.get(row["backend"], {})
        a, b = (r.get("latency", {}).get("p50_ms") for r in (prev, row))
        pa, pb = ((judged_parity(bench_, r) or {}).get("p99_input_px") for bench_, r in ((old, prev), (new, row)))
        change = f"{100 * (b / a - 1):+.1f}%" if a and b else "-"
        rows.append((row["backend"], _fmt(a, ".2f"), _fmt(b, ".2f"), change, _fmt(pa, ".3g"), _fmt(pb, ".3g")))
    for name in before.keys() - {r["backend"] for r in new["backends"]}:
        rows.append((name, f"(only in {old_path})", "", "", "", ""))
    return format_table(("backend", "p50 old", "p50 new", "change", "p99 input px old", "p99 input px new"), rows)
