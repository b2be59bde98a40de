"""Shared fixtures: the released-variant table, synthetic checkpoints in the released layout, one XS export.

Nothing here (or in any test) reads outside the repository: a fresh clone has only the repository."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from common import environment
from models.spec import ModelSpec, spec_for
from models.synthetic.untrained import write_synthetic_checkpoint

# as the CLI does, before any test imports ONNX Runtime, matplotlib or Keras: no telemetry, nothing in HOME
environment.apply()


@pytest.fixture(autouse=True)
def _root_log_handlers_restored():
    """The CLI's `logging.basicConfig(force=True)` binds the root logger to the stream pytest captured for
    that test and closes after it; later tests' log lines would then fail to write ("Logging error")."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in list(root.handlers):  # pytest's own capture handlers are subclasses: left to pytest
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(level)


REPO = Path(__file__).resolve().parents[1]
#: The variant table the registry is checked against (its source is stated in the file).
RELEASED_VARIANTS = Path(__file__).resolve().parent / "models" / "released_variants.md"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch's 2-thread pool stalls badly when other jobs hold a core; 1 thread keeps small-model tests fast."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    """A network small enough for unit tests: 64 px input, 8x8x8 heatmaps, 5 joints."""
    return ModelSpec("tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                     depth_bins=8, joints=5, input_size=64)


@pytest.fixture(scope="session")
def reference_table() -> dict[str, dict[str, str]]:
    """The table of tests/models/released_variants.md, read once: variant -> column -> cell."""
    text = RELEASED_VARIANTS.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = next(r for r in rows if r.startswith("| variant"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == len(columns) and re.fullmatch(r"XS|S|M|L", cells[0]):
            table[cells[0]] = dict(zip(columns, cells))
    assert set(table) == {"XS", "S", "M", "L"}, f"could not read the variant table: {table.keys()}"
    return table


@pytest.fixture(scope="session")
def make_ckpt(tmp_path_factory):
    """make_ckpt(variant, legacy=False, seed=0, joints=18) -> path of a cached synthetic checkpoint."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("ckpts")

    def make(variant: str, legacy: bool = False, seed: int = 0, joints: int = 18) -> Path:
        key = (variant, legacy, seed, joints)
        if key not in cache:
            name = f"{variant}-{'legacy' if legacy else 'named'}-s{seed}-j{joints}.pth.tar"
            cache[key] = write_synthetic_checkpoint(spec_for(variant, joints), root / name, seed, legacy)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def xs_export(make_ckpt, tmp_path_factory):
    """One end-to-end export of XS for the whole session: (out_dir, checkpoint, ExportResult)."""
    from exporters.pipeline.export import ExportOptions, run_export

    out = tmp_path_factory.mktemp("export") / "XS"
    ckpt = make_ckpt("XS")
    return out, ckpt, run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=ckpt))


@pytest.fixture(scope="session")
def xs_int8_export(tmp_path_factory):
    """The shipped trained-synthetic XS reference weights (what `make export VARIANT=XS` uses), exported with
    every format: trained-like, single-peaked heatmaps, so integer artifacts are built and judged."""
    from exporters.pipeline.export import ExportOptions, default_checkpoint, run_export

    ckpt = default_checkpoint("XS", 18, 0)
    out = tmp_path_factory.mktemp("int8") / "XS"
    run_export(ExportOptions(out_dir=out, variant="XS", checkpoint=ckpt))
    return out, ckpt
