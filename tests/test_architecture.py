"""House rules a tool checks: no import cycles, one place per runtime, and a format table that is
really the only thing to edit when a format is added."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "models", "runtimes", "exporters", "benchmarks", "robustness")


def _project_modules() -> dict[str, Path]:
    modules = {"cli": REPO / "cli.py"}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its source (inside functions too).

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
    Parent packages a submodule import runs implicitly are not edges (as import-linter counts).
    """
    modules = _project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    if target in modules:
                        edges.add(target)
                    elif base in modules:
                        edges.add(base)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_project_modules():
    graph = import_graph()
    assert "exporters.pipeline" in graph and "exporters.formats" in graph["exporters.pipeline"]
    assert find_cycles(graph) == []


def test_lower_layers_do_not_import_higher_ones():
    """common <- models <- runtimes <- exporters <- benchmarks <- cli <- robustness: the data flow, as imports
    (the reliability campaign drives the CLI itself, so it sits above it)."""
    order = {"common": 0, "models": 1, "runtimes": 2, "exporters": 3, "benchmarks": 4, "cli": 5, "robustness": 6}
    wrong = [(m, t) for m, targets in import_graph().items() for t in targets
             if order[t.split(".")[0]] > order[m.split(".")[0]]]
    assert wrong == []


def _product_sources() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in _project_modules().values()}


@pytest.mark.parametrize("needle, home", [
    ("InferenceSession(", "runtimes/onnxrt.py"),
    ("Interpreter(", "runtimes/litert.py"),
    ("MLModel(", "runtimes/coreml.py"),
    ("run_graph(", "runtimes/coreml.py"),
])
def test_each_runtime_is_opened_in_one_place(needle, home):
    """Product code opens ORT, TFLite and Core ML (or its reference evaluator) in one module each."""
    users = sorted(path for path, text in _product_sources().items()
                   if needle in text and not path.startswith("runtimes/coreml_reference/"))
    assert users == [home]


# ---- a format added as one row + builder + runner ---------------------------------------------
def _copy_onnx(run, fmt) -> None:
    """The dummy format's builder: the verified ONNX under another suffix."""
    (kind,) = fmt.artifacts
    path = run.path_for(kind)
    shutil.copyfile(run.staging / f"{run.stem}.onnx", path)
    run.verify(path, kind)


@pytest.fixture()
def dummy_format(monkeypatch):
    from exporters import formats

    kind = formats.ArtifactKind("onnx-copy", "fp32", ".copy.onnx", "NCHW", "onnxruntime", "onnx-copy", "fp32")
    row = formats.ExportFormat("onnx-copy", "the ONNX file again, under another suffix (a test row)", (kind,),
                               _copy_onnx, requires=("onnx",), default=False)
    monkeypatch.setattr(formats, "FORMATS", [*formats.FORMATS, row])
    return row


def test_a_new_format_row_appears_in_the_cli_help(dummy_format, capsys):
    from cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "onnx-copy: the ONNX file again" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


@pytest.mark.e2e
def test_a_new_format_row_is_exported_verified_benched_and_rechecked(dummy_format, tmp_path):
    import torch

    from benchmarks.latency import LatencySettings
    from benchmarks.run import BenchOptions, run_bench
    from exporters.manifest import Manifest
    from exporters.pipeline import ExportOptions, run_export
    from exporters.verify import check_artifacts
    from models.spec import ModelSpec
    from models.synthetic.untrained import synthetic_model

    spec = ModelSpec("small", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                     depth_bins=32)
    ckpt = tmp_path / "small.pth"
    torch.save({"network": synthetic_model(spec).state_dict()}, ckpt)
    out = tmp_path / "out"
    run_export(ExportOptions(out_dir=out, checkpoint=ckpt, formats=("onnx", "onnx-copy")))
    copy = next(a for a in Manifest.read(out).artifacts if a.format == "onnx-copy")
    assert copy.file == "convnextpose-custom.copy.onnx" and copy.runtime == "onnxruntime"
    assert (out / copy.file).is_file() and copy.verdict["status"] == "published"
    assert {c["file"]: c["status"] for c in check_artifacts(out)}[copy.file] == "published"
    bench = run_bench(BenchOptions(out_dir=out, only=("onnx-copy",),
                                   settings=LatencySettings(warmup_runs=1, min_runs=3, min_seconds=0.0)))
    (row,) = bench["backends"]
    assert row["backend"] == "onnx-copy" and row["status"] == "passed" and "onnxruntime" in row["runtime"]
