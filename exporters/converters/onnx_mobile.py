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

The fp16-safe soft-argmax (models/network.SoftArgmax3D) is ReduceMax, Exp and ReduceSums, and the checker's
tables lack some of them: NNAPI has no ReduceMax or ReduceSum, ORT's Core ML NeuralNetwork provider no Exp,
ReduceMax or ReduceSum. ``ort_tail`` rewrites them into ops all three providers take, the same function in
real arithmetic (tests/exporters/test_onnx_mobile.py: within fp32 rounding):

- ReduceMax over the last axis of (N, J, L) -> Reshape (N, J, L, 1), GlobalMaxPool, Reshape (exact);
- ReduceSum over an axis of n -> [Transpose it last,] MatMul with a constant (n, 1) of ones, Reshape: the
  same n terms summed;
- Exp(x) -> Pow(e, x), e the fp32 constant (exp(x) to ~|x| * 4e-8 relative: fp32's rounding of e).

Only the ONNX files ORT runs get them; the ONNX onnx2tf converts keeps ReduceMax / Exp / Sum, which LiteRT's
XNNPACK and GPU delegates take whole (POW is not an XNNPACK op).
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


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    return shapes


def _axes(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1 and node.input[1] in initializers:
        return [int(v) for v in initializers[node.input[1]].reshape(-1)]
    return None


def _keepdims(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "keepdims"), 1)


def _ort_tail(model: onnx.ModelProto) -> list[str]:
    """The soft-argmax's ReduceMax / ReduceSum / Exp as ops NNAPI and both Core ML providers take (module
    docstring); a node whose shapes are not static is left as it is."""
    graph = model.graph
    shapes = _static_shapes(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    counts = {"ReduceMax": 0, "ReduceSum": 0, "Exp": 0}
    new_nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        if name not in initializers:
            graph.initializer.append(numpy_helper.from_array(value, name))
            initializers[name] = value
        return name

    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.input else None
        out_shape = shapes.get(node.output[0]) if node.output else None
        axes = _axes(node, initializers) if node.op_type in ("ReduceMax", "ReduceSum") else None
        axis = (axes[0] % len(shape)) if axes and len(axes) == 1 and shape else None
        base = node.name or node.output[0]
        if node.op_type == "ReduceMax" and shape and len(shape) == 3 and axis == 2 and _keepdims(node) and out_shape:
            pooled_in, pooled = f"{base}/as_nchw", f"{base}/pooled"
            new_nodes += [
                onnx.helper.make_node("Reshape", [node.input[0], const(f"{base}/nchw_shape", np.array(
                    [*shape, 1], np.int64))], [pooled_in], name=f"{base}/Reshape_in"),
                onnx.helper.make_node("GlobalMaxPool", [pooled_in], [pooled], name=f"{base}/GlobalMaxPool"),
                onnx.helper.make_node("Reshape", [pooled, const(f"{base}/out_shape", np.array(out_shape, np.int64))],
                                      list(node.output), name=f"{base}/Reshape_out")]
            counts["ReduceMax"] += 1
        elif node.op_type == "ReduceSum" and shape and axis is not None and out_shape:
            source, last = node.input[0], len(shape) - 1
            if axis != last:
                perm = [i for i in range(len(shape)) if i != axis] + [axis]
                source = f"{base}/axis_last"
                new_nodes.append(onnx.helper.make_node("Transpose", [node.input[0]], [source], perm=perm,
                                                       name=f"{base}/Transpose"))
            n = shape[axis]
            summed = f"{base}/summed"
            new_nodes += [
                onnx.helper.make_node("MatMul", [source, const(f"ones_{n}x1", np.ones((n, 1), np.float32))], [summed],
                                      name=f"{base}/MatMul_ones"),
                onnx.helper.make_node("Reshape", [summed, const(f"{base}/out_shape", np.array(out_shape, np.int64))],
                                      list(node.output), name=f"{base}/Reshape_out")]
            counts["ReduceSum"] += 1
        elif node.op_type == "Exp":
            new_nodes.append(onnx.helper.make_node("Pow", [const("e", np.array(np.e, np.float32)), node.input[0]],
                                                   list(node.output), name=f"{base}/Pow_e"))
            counts["Exp"] += 1
        else:
            new_nodes.append(node)
    if not any(counts.values()):
        return []
    del graph.node[:]
    graph.node.extend(new_nodes)
    # the reductions' axes tensors are read by nothing now: ONNX Runtime warns about each one it loads
    used = {name for node in graph.node for name in node.input} | {v.name for v in [*graph.input, *graph.output]}
    for unused in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(unused)
    words = {"ReduceMax": "ReduceMax -> GlobalMaxPool", "ReduceSum": "ReduceSum -> MatMul with ones",
             "Exp": "Exp -> Pow(e, x)"}
    return [f"{n} {words[op]}" for op, n in counts.items() if n]


def for_mobile_providers(model: onnx.ModelProto, ort_tail: bool = True) -> list[str]:
    """Rewrite ``model`` in place for NNAPI / Core ML partitioning; returns the rewrites applied, in words.
    ``ort_tail``: also the soft-argmax's ops the providers lack (only for files ORT runs: module docstring)."""
    done = []
    moved = _constants_to_initializers(model.graph)
    if moved:
        done.append(f"{moved} Constant node(s) -> initializers")
    roi = _explicit_resize_roi(model.graph)
    if roi:
        done.append(f"{roi} Resize node(s): empty roi input -> an explicit empty tensor")
    if ort_tail:
        done += _ort_tail(model)
    return done
