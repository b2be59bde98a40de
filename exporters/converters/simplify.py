"""ONNX graph simplification (onnxsim by default, onnxslim as the alternative)."""

from __future__ import annotations

from pathlib import Path

import onnx

from common.errors import ExportError
from exporters.converters.onnx_mobile import for_mobile_providers
from exporters.converters.to_onnx import set_metadata

SIMPLIFIERS = ("onnxsim", "onnxslim")


def simplify_onnx(src: Path, dst: Path, simplifier: str, metadata: dict[str, str], for_ort: bool = True) -> dict:
    """``for_ort``: the file ONNX Runtime runs on phones (the soft-argmax rewritten for its providers:
    exporters/converters/onnx_mobile.py); False for the graph onnx2tf converts."""
    proto = onnx.load(str(src))
    before = len(proto.graph.node)
    if simplifier == "onnxsim":
        import onnxsim

        simplified, ok = onnxsim.simplify(proto)
        if not ok:
            raise ExportError(f"onnxsim could not validate the simplified graph of {src}")
    elif simplifier == "onnxslim":
        import onnxslim

        simplified = onnxslim.slim(proto)
    else:
        raise ExportError(f"unknown simplifier {simplifier!r}; choose from {', '.join(SIMPLIFIERS)}")
    rewrites = for_mobile_providers(simplified, ort_tail=for_ort)  # one partition for NNAPI / Core ML
    set_metadata(simplified, metadata)
    onnx.checker.check_model(simplified, full_check=True)
    onnx.save(simplified, str(dst))
    ops: dict[str, int] = {}
    for node in simplified.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"simplifier": simplifier, "nodes_before": before, "nodes_after": len(simplified.graph.node), "ops": ops,
            "mobile_rewrites": rewrites}
