"""Exact rewrites that let ONNX Runtime's mobile execution providers take the whole graph.

ORT's own readiness checker (``onnxruntime.tools.check_onnx_model_mobile_usability``, which
judging/readiness.py runs) split the simplified S graph into 3 partitions for NNAPI and both Core ML
providers ("should perform well: NO"), for two reasons in the graph's form, not its function:

- each bilinear ``Resize`` leaves its unused ``roi`` input empty (``""``); the checker counts an input
  without a shape as a dynamic shape, and the EPs then leave the node to the CPU;
- ``Constant`` nodes hold the Resize scales and the soft-argmax coordinates; the EPs' builders want
  them as initializers ("scales or sizes must be constant", "input B should be constant").

The rewrites give ``roi`` an explicit empty tensor (it is read only in ``tf_crop_and_resize`` mode)
and turn every ``Constant`` node into the initializer it computes; the function is unchanged, bit for
bit (tests/exporters/test_onnx_mobile.py). The BatchNorm layers the checker also named are gone before
export (models/folding.without_batchnorm).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

#: the name of the explicit empty ``roi`` every Resize shares
EMPTY_ROI = "resize_roi_unused"


def _constants_to_initializers(graph: onnx.GraphProto) -> int:
    moved = 0
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        if len(node.attribute) != 1 or node.attribute[0].name != "value":
            continue  # value_float / value_ints ... forms: none in these graphs, left as they are
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        graph.node.remove(node)
        moved += 1
    return moved


def _explicit_resize_roi(graph: onnx.GraphProto) -> int:
    resizes = [n for n in graph.node if n.op_type == "Resize" and len(n.input) > 1 and n.input[1] == ""]
    if resizes and EMPTY_ROI not in {i.name for i in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), EMPTY_ROI))
    for node in resizes:
        node.input[1] = EMPTY_ROI
    return len(resizes)


def for_mobile_providers(model: onnx.ModelProto) -> list[str]:
    """Rewrite ``model`` in place for NNAPI / Core ML partitioning; returns the rewrites applied, in words."""
    done = []
    moved = _constants_to_initializers(model.graph)
    if moved:
        done.append(f"{moved} Constant node(s) -> initializers")
    roi = _explicit_resize_roi(model.graph)
    if roi:
        done.append(f"{roi} Resize node(s): empty roi input -> an explicit empty tensor")
    return done
