"""PyTorch -> ExecuTorch programs (.pte): XNNPACK delegate fp32 and int8 (PT2E), Core ML delegate fp16.

``torch.export`` captures the network (normalisation folded, as every artifact takes it), a partitioner
lowers what its backend takes into the delegate, and the program is serialised. For ConvNeXtPose
every operator is delegated in one subgraph (measured, executorch 1.5.1: convolution, ReLU, add,
bilinear upsampling, and the soft-argmax as mobile_graph.LinearSoftArgmax writes it: max-pool, exp, linear,
permute, view, cat, div); ``delegation`` records what was and was not, so an operator that falls out of the
delegate is named rather than silently slow.
Int8: the XNNPACK quantizer's symmetric config (per-channel int8 weights, int8 activations),
observers calibrated on the export's calibration set, then lowered like fp32.
Core ML: the delegate's payload is an ML Program (.mlpackage) that Core ML compiles on the device;
it is what runtimes/executorch_coreml.py extracts and verifies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import ExportError
from common.files import write_atomic
from common.quiet import hushed
from runtimes.executorch_coreml import BACKEND_ID as COREML_BACKEND_ID

log = logging.getLogger(__name__)

#: get_delegation_info rows that are plumbing, not operators (the delegate call's outputs are read by getitem).
_STRUCTURAL = {"getitem"}


def _export(model: nn.Module, example: torch.Tensor):
    try:
        return torch.export.export(model, (example,))
    except Exception as exc:  # torch.export's own message names the op or the data-dependent expression
        first = next((line for line in str(exc).strip().splitlines() if line.strip()), type(exc).__name__)
        raise ExportError(f"torch.export cannot capture this model for ExecuTorch: {first.strip()[:300]}") from None


XNNPACK = "XnnpackBackend"
COREML = COREML_BACKEND_ID


def delegation(edge, backend: str = XNNPACK) -> dict:
    """Delegated and non-delegated operators of a lowered program (ExecuTorch's delegation info)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    table = info.get_operator_delegation_dataframe()
    rows = [r for r in table.to_dict("records") if r["op_type"] != "Total"]
    delegated = {r["op_type"]: int(r["occurrences_in_delegated_graphs"]) for r in rows
                 if r["occurrences_in_delegated_graphs"] and r["op_type"] not in _STRUCTURAL}
    outside = {r["op_type"]: int(r["occurrences_in_non_delegated_graphs"]) for r in rows
               if r["occurrences_in_non_delegated_graphs"] and r["op_type"] not in _STRUCTURAL}
    return {"delegate": backend, "delegated_subgraphs": int(info.num_delegated_subgraphs),
            "delegated_ops": delegated, "non_delegated_ops": outside,
            "all_ops_delegated": not outside}


def _lower_and_save(exported, out: Path, partitioner=None, backend: str = XNNPACK) -> dict:
    from executorch.exir import to_edge_transform_and_lower

    if partitioner is None:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = XnnpackPartitioner()
    edge = to_edge_transform_and_lower(exported, partitioner=[partitioner])
    record = delegation(edge, backend)
    buffer = edge.to_executorch().buffer
    write_atomic(out, lambda tmp: Path(tmp).write_bytes(buffer))
    return record


def export_fp32(model: nn.Module, example: torch.Tensor, out: Path) -> dict:
    """``model`` (NCHW float input) as an fp32 XNNPACK program at ``out``; returns the delegation record."""
    with torch.no_grad():
        return {"delegation": _lower_and_save(_export(model.eval(), example), out)}


def export_int8(model: nn.Module, calibration: np.ndarray, out: Path) -> dict:
    """int8 (PT2E, XNNPACK quantizer, per-channel symmetric weights) calibrated on ``calibration``
    (N, 3, S, S), the tensors the artifacts take."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_module_name_filter,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = torch.from_numpy(np.ascontiguousarray(calibration[:1], dtype=np.float32))
    # the soft-argmax stays float, as in every integer file (its sums of exponentials do not survive int8): only
    # nodes outside it are annotated (the quantizer takes no None config for a module name)
    in_tail = get_module_name_filter("soft_argmax")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda node: not in_tail(node))
    with torch.no_grad():
        prepared = prepare_pt2e(_export(model.eval(), example).module(), quantizer)
        for x in calibration:
            prepared(torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)))
        converted = convert_pt2e(prepared)
        record = _lower_and_save(_export(converted, example), out)
    return {"delegation": record, "quantizer": "XNNPACKQuantizer, symmetric per-channel int8 weights, int8 "
            "activations (PT2E)", "calibration_images": int(len(calibration))}


def export_coreml(model: nn.Module, example: torch.Tensor, out: Path, compute_precision: str,
                  min_target: str) -> dict:
    """``model`` as a program for ExecuTorch's Core ML delegate: an ML Program computing in
    ``compute_precision`` ("fp16" | "fp32") for ``min_target`` (a coremltools.target name, e.g. "iOS16")."""
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    precision = ct.precision.FLOAT16 if compute_precision == "fp16" else ct.precision.FLOAT32
    specs = CoreMLBackend.generate_compile_specs(compute_precision=precision,
                                                 minimum_deployment_target=getattr(ct.target, min_target))
    with torch.no_grad(), hushed():  # coremltools' progress bars, the partitioner's INFO lines
        record = _lower_and_save(_export(model.eval(), example), out, CoreMLPartitioner(compile_specs=specs), COREML)
    return {"delegation": record, "convert_to": "mlprogram", "compute_precision": compute_precision,
            "minimum_deployment_target": min_target}
