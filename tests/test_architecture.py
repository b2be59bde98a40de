"""House rules a tool checks: no import cycles, one place per runtime, and a format table that is
really the only thing to edit when a format is added."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "models", "runtimes", "judging", "exporters", "benchmarks", "cli", "robustness")


def _project_modules() -> dict[str, Path]:
    modules = {}
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
    assert "exporters.pipeline.export" in graph and "exporters.formats" in graph["exporters.pipeline.export"]
    assert find_cycles(graph) == []


#: The rooms in the order data flows, each importing only rooms before it; rooms in one tuple are peers
#: that do not import each other. Judging sits below the exporters, so the bench, verify, diagnose and
#: check-golden can judge without importing anything that builds files.
ROOMS = ("common", "models", "runtimes", "judging", "exporters.formats",
         ("exporters.converters", "exporters.app_files"), "exporters.pipeline", "benchmarks", "cli", "robustness")
#: Rooms that build files: converters, and the export pipeline (stages, the run, the publisher).
BUILDERS = ("exporters.converters", "exporters.pipeline")
#: Modules that build single-op models on purpose (the kernel and profile studies) and may use converters.
BUILDS_ON_PURPOSE = ("benchmarks.kernels", "benchmarks.profile")


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "exporters" and len(parts) > 1 else parts[0]


def _rank(room: str) -> int:
    for i, entry in enumerate(ROOMS):
        if room == entry or (isinstance(entry, tuple) and room in entry):
            return i
    raise AssertionError(f"room {room!r} is in no place of ROOMS: add it there")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a room at or after one's own place in ROOMS (peers included)."""
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if room_of(m) != room_of(t) and _rank(room_of(t)) >= _rank(room_of(m)))


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for t in graph.get(todo.pop(), ()):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def judges_that_build(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Judging and bench modules that import, directly or through others, a module that builds files."""
    judges = [m for m in graph if room_of(m) in ("judging", "benchmarks") and m not in BUILDS_ON_PURPOSE]
    found = {m: sorted(t for t in reaches(graph, m) if room_of(t) in BUILDERS) for m in judges}
    return {m: builders for m, builders in found.items() if builders}


def test_lower_layers_do_not_import_higher_ones():
    """The data flow, as imports (the reliability campaign drives the CLI itself, so it sits above it)."""
    assert upward_imports(import_graph()) == []


def test_the_judges_and_the_bench_import_nothing_that_builds_files():
    graph = import_graph()
    assert "judging.verify" in graph and "benchmarks.run" in graph
    assert judges_that_build(graph) == {}
    assert len([m for m in graph if m.startswith("exporters.") and m.count(".") == 1]) <= 12


def test_the_rules_fail_on_a_judge_that_imports_a_converter_or_the_pipeline():
    """The same checks on the real graph with one wrong import added: each is caught, with its path."""
    graph = import_graph()
    wrong = {**graph, "judging.verify": graph["judging.verify"] | {"exporters.converters.to_tflite"}}
    assert ("judging.verify", "exporters.converters.to_tflite") in upward_imports(wrong)
    assert "exporters.converters.to_tflite" in judges_that_build(wrong)["judging.verify"]
    # an import that is not upward by room but brings a builder in: the table made to import the stages
    table = {**graph, "exporters.formats": graph["exporters.formats"] | {"exporters.pipeline.stages"}}
    assert "exporters.pipeline.stages" in judges_that_build(table)["benchmarks.run"]
    peers = {**graph, "exporters.converters.to_onnx": {"exporters.app_files.metadata"}}
    assert ("exporters.converters.to_onnx", "exporters.app_files.metadata") in upward_imports(peers)


def _product_sources() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in _project_modules().values()}


@pytest.mark.parametrize("needle, home", [
    ("InferenceSession(", "runtimes/onnxrt.py"),
    ("Interpreter(", "runtimes/litert.py"),
    ("MLModel(", "runtimes/coreml.py"),
    ("run_graph(", "runtimes/coreml.py"),
    ("CompiledModel.from_", "runtimes/gpu/worker.py"),
])
def test_each_runtime_is_opened_in_one_place(needle, home):
    """Product code opens ORT, TFLite and Core ML (or its reference evaluator) in one module each -- and the
    arm64 worker, which runs inside the emulated Python where none of the project can be imported, opens the
    runtimes it has with the same options (runtimes/arm64/worker.py; LiteRT's CompiledModel there for its
    XNNPACK weight cache). LiteRT's GPU accelerator (its CompiledModel API) is opened in the GPU worker process
    only."""
    users = sorted(path for path, text in _product_sources().items()
                   if needle in text and not path.startswith("runtimes/coreml_reference/"))
    emulated = ["runtimes/arm64/worker.py"] if home in ("runtimes/onnxrt.py", "runtimes/litert.py",
                                                        "runtimes/gpu/worker.py") else []
    assert users == sorted([home, *emulated])


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
                               f"{__name__}:_copy_onnx", requires=("onnx",), default=False)
    monkeypatch.setattr(formats, "FORMATS", [*formats.FORMATS, row])
    return row


#: The command line's modules that are not commands: the dispatcher, `python -m cli`, shared argument types.
CLI_HELPERS = ("cli", "cli.__main__", "cli.arguments")
#: The most lines any module of the command line may hold: a command is its arguments beside its run function.
CLI_MODULE_MAX_LINES = 150


def test_the_command_line_is_one_small_module_per_command():
    """Each subcommand is one module of cli/ declaring its arguments (``add_to``) beside its ``run``; the
    dispatcher lists them and adds nothing of its own but -v; no module of the command line grows past
    CLI_MODULE_MAX_LINES."""
    import cli

    modules = {name: path for name, path in _project_modules().items() if name.split(".")[0] == "cli"}
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    assert {name: n for name, n in lines.items() if n > CLI_MODULE_MAX_LINES} == {}
    commands = sorted(name for name in modules if name not in CLI_HELPERS)
    assert commands == sorted(c.__name__ for c in cli.COMMANDS)
    for command in cli.COMMANDS:
        assert callable(command.add_to) and callable(command.run) and hasattr(command, "PRELOAD"), command.__name__
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert list(sub.choices) == [c.NAME for c in cli.COMMANDS]
    assert all(sub.choices[c.NAME].get_default("func") is c.run for c in cli.COMMANDS)
    assert [o for a in parser._actions for o in a.option_strings] == ["-h", "--help", "-v", "--verbose"]


def test_a_new_format_row_appears_in_the_cli_help(dummy_format, capsys):
    from cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "onnx-copy: the ONNX file again" in " ".join(capsys.readouterr().out.split())  # however argparse wraps


@pytest.mark.e2e
def test_a_new_format_row_is_exported_verified_benched_and_rechecked(dummy_format, tmp_path):
    import torch

    from benchmarks.latency import LatencySettings
    from benchmarks.run import BenchOptions, run_bench
    from exporters.pipeline.export import ExportOptions, run_export
    from judging.manifest import Manifest
    from judging.verify import check_artifacts
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
