"""PyTorch -> Core ML: ML Program (.mlpackage, fp16, iOS 15+), NeuralNetwork (.mlmodel, fp32, iOS 14+) and
weight-compressed ML Programs (int8 weights or a 6-bit palette, fp16 activations, iOS 16+).

Compression (``exporters.formats.COMPRESSED_TARGETS``) is coremltools' post-training weight compression
(coremltools.optimize.coreml) applied to the fp16 ML Program: only the weights of ``conv`` (and
``conv_transpose``, which ConvNeXtPose does not have) are compressed. Not ``linear`` / ``matmul``:
the converter turns the soft-argmax's matmul with the constant (D*H*W, 3) voxel-coordinate table
into a ``linear`` whose weight is that table, and it must stay exact (fp16 holds 0..63 exactly;
int8 per-channel would put the coordinates 0.12 px apart from their true values). The compressed weights
are ``constexpr_*`` ops, which Core ML decompresses to fp16 when it loads the model; activations
and compute stay fp16, so the saving is in file size (and memory bandwidth), not arithmetic.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from common.quiet import hushed
from exporters.formats import CoreMLTarget
from models.contract import INPUT_NAME, OUTPUT_NAME, InputContract
from models.network import ConvNeXtPose

log = logging.getLogger(__name__)


# Ops whose const weights are compressed. Not linear / matmul: their const is the soft-argmax coordinate table.
COMPRESSED_OP_TYPES = ("conv", "conv_transpose")
PALETTE_BITS = 6
# iOS 16 LUTs: one per tensor, 2, 4, 16, 64 or 256 entries.
_PALETTES = {f"palette{n}-kmeans": n for n in (1, 2, 4, 6, 8)}


def kmeans_lut(
    weight: np.ndarray, nbits: int = PALETTE_BITS, max_iterations: int = 3000
) -> tuple[np.ndarray, np.ndarray]:
    """A 2**nbits-entry look-up table for ``weight`` by 1-D k-means, and each element's index (uint8, flat).

    coremltools' own "kmeans" mode needs scikit-learn (not a dependency here). 1-D k-means is cheap
    on the distinct values: Lloyd iterations on the sorted unique values weighted by their counts,
    until no value changes cluster, from two deterministic starts -- the uniform palette over
    [min, max] (so the result is never worse than coremltools' "uniform" mode) and equal-count
    quantiles -- keeping the one with the lower squared error. The table is rounded to the weight's
    dtype (fp16) and sorted before the final assignment, so every index names its nearest entry.
    """
    k = 1 << nbits
    values, inverse, counts = np.unique(weight.ravel(), return_inverse=True, return_counts=True)
    v = values.astype(np.float64)
    if len(v) <= k:
        lut = np.concatenate([v, np.full(k - len(v), v[-1])])
    else:
        cumulative = np.cumsum(counts) - counts / 2
        starts = (np.linspace(v[0], v[-1], k), np.interp((np.arange(k) + 0.5) / k * counts.sum(), cumulative, v))
        lut = min((_lloyd_1d(v, counts, start, max_iterations) for start in starts), key=lambda r: r[1])[0]
    lut = np.sort(lut.astype(weight.dtype))
    wide = lut.astype(np.float64)
    nearest = np.searchsorted((wide[1:] + wide[:-1]) / 2, v).astype(np.uint8)
    return lut, nearest[inverse.ravel()]


def _lloyd_1d(v: np.ndarray, counts: np.ndarray, lut: np.ndarray, max_iterations: int) -> tuple[np.ndarray, float]:
    """Weighted Lloyd iterations on sorted values v; (centres, weighted squared error)."""
    k, assign = len(lut), None
    for _ in range(max_iterations):
        lut = np.sort(lut)
        new_assign = np.searchsorted((lut[1:] + lut[:-1]) / 2, v)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        mass = np.bincount(assign, weights=counts, minlength=k)
        sums = np.bincount(assign, weights=counts * v, minlength=k)
        lut = np.where(mass > 0, sums / np.maximum(mass, 1e-300), lut)  # an empty cluster keeps its centre
    lut = np.sort(lut)
    assign = np.searchsorted((lut[1:] + lut[:-1]) / 2, v)
    return lut, float(np.sum(counts * (v - lut[assign]) ** 2))


def _compression_config(target: CoreMLTarget):
    import coremltools.optimize.coreml as cto

    if target.compression == "int8-linear-symmetric":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                weight_threshold=target.weight_threshold)
        describe = {"method": "coremltools.optimize.coreml.linear_quantize_weights", "mode": "linear_symmetric",
                    "dtype": "int8", "granularity": "per_channel"}
        compress = cto.linear_quantize_weights
    elif target.compression in _PALETTES:
        nbits = _PALETTES[target.compression]
        op_config = cto.OpPalettizerConfig(mode="custom", lut_function=functools.partial(kmeans_lut, nbits=nbits),
                                           granularity="per_tensor", weight_threshold=target.weight_threshold)
        describe = {"method": "coremltools.optimize.coreml.palettize_weights", "mode": "custom",
                    "lut": f"{1 << nbits} entries ({nbits}-bit indices), 1-D k-means per tensor "
                           "(exporters.converters.to_coreml.kmeans_lut)", "granularity": "per_tensor"}
        compress = cto.palettize_weights
    else:
        raise ValueError(f"unknown Core ML compression {target.compression!r}")
    config = cto.OptimizationConfig(op_type_configs={op: op_config for op in COMPRESSED_OP_TYPES})
    describe |= {"op_types": list(COMPRESSED_OP_TYPES), "weight_threshold": target.weight_threshold}
    return compress, config, describe


def _op_counts(mlmodel) -> Counter:
    func = mlmodel.get_spec().mlProgram.functions["main"]
    return Counter(op.type for op in func.block_specializations[func.opset].operations)


#: Core ML input kinds: a picture (ct.ImageType: a CVPixelBuffer from the camera goes straight in,
#: Vision crops and scales it) or a float MLMultiArray (ct.TensorType).
INPUT_KINDS = ("image", "tensor")


def coreml_input(contract: InputContract, kind: str):
    """The ct input for ``contract``: an RGB image scaled by 1/255 inside the model, or the float tensor.

    An image input has one scale for all channels (and a bias per channel), so it can carry the
    folded contract (RGB / 255) exactly, but not ImageNet's per-channel std."""
    import coremltools as ct

    if kind == "tensor":
        return ct.TensorType(name=INPUT_NAME, shape=contract.shape_nchw)
    if kind != "image":
        raise ValueError(f"unknown Core ML input kind {kind!r}; choose from {', '.join(INPUT_KINDS)}")
    if not contract.normalization_folded:
        raise ValueError("a Core ML image input needs the normalisation folded into the model (one scale for all "
                         "channels): drop --normalized-input or use --coreml-input tensor")
    return ct.ImageType(name=INPUT_NAME, shape=contract.shape_nchw, scale=1 / 255.0, bias=[0.0, 0.0, 0.0],
                        color_layout=ct.colorlayout.RGB)


def input_description(contract: InputContract, kind: str) -> str:
    _, _, h, w = contract.shape_nchw
    if kind == "image":
        return (f"RGB image {w}x{h}: a square crop around one person (Vision: VNCoreMLRequest with "
                "imageCropAndScaleOption .scaleFill on that crop); pixel values 0..255, scaled by 1/255 inside")
    return f"NCHW float32 {list(contract.shape_nchw)}: {contract.describe()}"


def trace(model: ConvNeXtPose, contract: InputContract) -> torch.jit.ScriptModule:
    """What coremltools converts. Not re-run to check it (torch's check_trace, 0.5 s for S): every Core ML
    file is verified against PyTorch anyway."""
    return torch.jit.trace(model, torch.zeros(contract.shape_nchw), check_trace=False)


def export_coreml(
    model: ConvNeXtPose, contract: InputContract, path: Path, target: CoreMLTarget, metadata: dict[str, str],
    input_kind: str = "tensor", traced: torch.jit.ScriptModule | None = None,
) -> dict:
    """``model`` to ``path`` as ``target``; ``traced``: its trace, when several targets share one."""
    import coremltools as ct

    if target.compression and target.convert_to != "mlprogram":
        raise ValueError(f"{target.precision}: weight compression needs an ML Program, not {target.convert_to}")
    traced = trace(model, contract) if traced is None else traced
    kwargs = {}
    if target.convert_to == "mlprogram":
        kwargs["compute_precision"] = (ct.precision.FLOAT16 if target.compute_precision == "fp16"
                                       else ct.precision.FLOAT32)
    with hushed():  # coremltools' pass-by-pass progress bars
        mlmodel = ct.convert(
            traced,
            inputs=[coreml_input(contract, input_kind)],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            convert_to=target.convert_to,
            minimum_deployment_target=getattr(ct.target, target.min_target),
            **kwargs,
        )
    details = {"convert_to": target.convert_to, "minimum_deployment_target": target.min_target,
               "compute_precision": target.compute_precision, "input_type": input_kind}
    if target.compression:
        compress, config, describe = _compression_config(target)
        with hushed():
            mlmodel = compress(mlmodel, config=config)
        ops = _op_counts(mlmodel)
        constexpr = {op: n for op, n in sorted(ops.items()) if op.startswith("constexpr_")}
        if not constexpr:
            raise RuntimeError(f"{target.precision}: coremltools compressed no weight (threshold "
                               f"{target.weight_threshold} elements)")
        details |= {"compression": describe | {"constexpr_ops": constexpr}}
        log.debug("Core ML %s: %s", target.precision, constexpr)
    mlmodel.author = "convnextpose-export"
    mlmodel.short_description = f"ConvNeXtPose {metadata['variant']} 3D human pose ({target.precision}" + (
        f", {target.compute_precision} activations, iOS 16+)" if target.compression else ")")
    mlmodel.license = "see the checkpoint's licence"
    mlmodel.input_description[INPUT_NAME] = input_description(contract, input_kind)
    spec = model.spec
    mlmodel.output_description[OUTPUT_NAME] = (
        f"(1, {spec.joints}, 3): x, y in heatmap px ({spec.heatmap_size}x{spec.heatmap_size}), z in depth bins "
        f"({spec.depth_bins}); see metadata 'output' for conversions"
    )
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.save(str(path))
    make_deterministic(path)
    return details


def make_deterministic(path: Path) -> None:
    """Same model, same bytes: coremltools serialises the spec's metadata map in hash order (it changes
    with every process) and names an .mlpackage's items with random UUIDs; both are rewritten."""
    import json
    import uuid

    from coremltools.models.utils import load_spec

    if path.is_dir():
        manifest_path = path / "Manifest.json"
        manifest = json.loads(manifest_path.read_text())
        ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, item["path"]))
               for old, item in manifest["itemInfoEntries"].items()}
        manifest["itemInfoEntries"] = {ids[old]: item for old, item in manifest["itemInfoEntries"].items()}
        manifest["rootModelIdentifier"] = ids[manifest["rootModelIdentifier"]]
        manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True))
        spec_file = next(path.rglob("model.mlmodel"))
    else:
        spec_file = path
    spec_file.write_bytes(load_spec(str(spec_file)).SerializeToString(deterministic=True))
