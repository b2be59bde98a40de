"""PyTorch -> ONNX (TorchScript exporter, fixed opset), checked and labelled with metadata."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from models.contract import INPUT_NAME, OUTPUT_NAME, InputContract
from models.network import ConvNeXtPose

DEFAULT_OPSET = 17


def export_onnx(
    model: ConvNeXtPose,
    contract: InputContract,
    path: Path,
    metadata: dict[str, str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> dict:
    dummy = torch.zeros(contract.shape_nchw)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the one that
        # gives a clean static graph for this model on torch 2.13 (toolchain.md).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
        )
    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return {"opset": opset, "dynamic_batch": dynamic_batch, "nodes": len(proto.graph.node)}


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "convnextpose-export"
    proto.doc_string = "ConvNeXtPose 3D human pose: input 'image', output 'joints' (see metadata 'input'/'output')"
