"""ExecuTorch programs for the Core ML delegate (.pte): their Core ML payload, run where Core ML runs.

On the device, ExecuTorch's Core ML backend hands the delegate's payload -- an ML Program package -- to
Core ML. ExecuTorch's Linux runtime registers no Core ML backend, so here the payload is taken out of
the program (ExecuTorch's own deserializer and its ``executorchcoreml`` unflattening, as its
``extract_coreml_models`` script does) and run like any .mlpackage by runtimes/coreml.py: Core ML on
macOS, the reference evaluator elsewhere. What is verified is the payload the device compiles, byte
for byte; ExecuTorch's own glue around it (input copy, output read) is not exercised here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common.errors import ExportError, RuntimeUnavailableError
from runtimes import coreml
from runtimes.session import Session, Tensors

BACKEND_ID = "CoreMLBackend"
#: A delegate whose payload sits in the program's named data starts with this, then a JSON reference.
_NAMED_DATA_MAGIC = b"CMJR"


def payloads(pte: Path) -> list[bytes]:
    """The flattened Core ML payload of each Core ML delegate in ``pte`` (one per delegated subgraph)."""
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary
    except ImportError:
        raise RuntimeUnavailableError("executorch is not installed: it reads the Core ML payload of a .pte "
                                      "(pip install -e . installs it)") from None
    pte_file = deserialize_pte_binary(Path(pte).read_bytes())
    program = pte_file.program
    named = {}
    if pte_file.named_data is not None:
        named = {key: pte_file.named_data.buffers[entry.buffer_index]
                 for key, entry in pte_file.named_data.pte_data.items()}
    found, seen = [], set()
    for plan in program.execution_plan:
        for delegate in plan.delegates:
            if delegate.id != BACKEND_ID:
                continue
            data = program.backend_delegate_data[delegate.processed.index].data
            if data.startswith(_NAMED_DATA_MAGIC):  # shared by several methods: stored once, by key
                key = json.loads(data[len(_NAMED_DATA_MAGIC):].decode("utf-8"))["key"]
                if key in seen:
                    continue
                seen.add(key)
                data = named[key]
            found.append(bytes(data))
    return found


@contextmanager
def extracted_package(pte: Path) -> Iterator[Path]:
    """The .mlpackage inside ``pte``'s single Core ML delegate, unpacked into a temporary folder removed on exit."""
    from executorch.backends.apple.coreml import executorchcoreml

    found = payloads(pte)
    if len(found) != 1:
        raise ExportError(f"{Path(pte).name}: {len(found)} Core ML delegates, expected exactly one "
                          "(the whole network in one Core ML model)")
    with tempfile.TemporaryDirectory(prefix="pte-coreml-") as folder:
        if not executorchcoreml.unflatten_directory_contents(found[0], folder):
            raise ExportError(f"{Path(pte).name}: its Core ML payload could not be unpacked")
        packages = sorted(Path(folder).rglob("*.mlpackage"))
        if len(packages) != 1:
            raise ExportError(f"{Path(pte).name}: its Core ML payload holds {len(packages)} .mlpackage folders")
        yield packages[0]


def open_session(path: Path, threads: int = 2, layout: str = "NCHW") -> Session:
    """``forward(image NCHW) -> joints`` of the payload (its model is read into memory, so the folder can go)."""
    with extracted_package(path) as package:
        session = coreml.open_session(package, threads, layout)
    where = "the .pte's Core ML payload"
    return Session(session.predict, f"{session.runtime} on {where}", timed=session.timed,
                   note=f"{session.note}; {where}" if session.note else "")


def intermediate_tensors(path: Path, x: np.ndarray, threads: int = 2, layout: str = "NCHW") -> Tensors:
    with extracted_package(path) as package:
        return coreml.intermediate_tensors(package, x, threads, layout)
