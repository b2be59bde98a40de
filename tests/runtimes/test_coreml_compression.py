"""Weight-compressed Core ML targets (int8 weights, 6-bit palette) and the reference evaluator's
constexpr kernels: decompression identical to coremltools' own, outputs close to the uncompressed
model, and mutated scales / zero points / LUTs / axes it must catch."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import ExportError
from exporters.converters.to_coreml import _compression_config, export_coreml, kmeans_lut
from exporters.formats import COMPRESSED_TARGETS, MLPACKAGE, MLPACKAGE_INT8, MLPACKAGE_PALETTE6
from judging.inputs import parity_inputs
from models.contract import InputContract
from models.folding import fold_normalization
from models.network import ConvNeXtPose
from models.spec import ModelSpec
from models.synthetic.untrained import synthetic_model
from runtimes.coreml_reference import (
    SUPPORTED_CONSTEXPR_OPS,
    UnsupportedOpError,
    declared_precision,
    evaluate_coreml,
    load_coreml,
)
from runtimes.coreml_reference.mil import affine_dequantize, lut_to_dense, unpack_indices

ct = pytest.importorskip("coremltools")
cto = pytest.importorskip("coremltools.optimize.coreml")

log = logging.getLogger(__name__)

# Max |delta| of any joint coordinate vs PyTorch fp32 on the tiny model (synthetic untrained weights,
# 10 parity inputs). Measured: uncompressed fp16 0.012, int8-weights 0.050, palette6 0.41 heatmap px;
# each mutation below moves joints by 1.3 px or more.
TOLERANCE_PX = {"int8-weights": 0.2, "palette6": 0.6}
CONSTEXPR_OP = {"int8-weights": "constexpr_affine_dequantize", "palette6": "constexpr_lut_to_dense"}
PRECISIONS = [t.precision for t in COMPRESSED_TARGETS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Compressed:
    model: ConvNeXtPose
    inputs: np.ndarray
    reference: np.ndarray  # PyTorch fp32
    paths: dict[str, Path]  # precision -> saved .mlpackage ("fp16": the uncompressed one)
    details: dict[str, dict]


@pytest.fixture(scope="module")
def compressed(tiny_spec: ModelSpec, tmp_path_factory) -> Compressed:
    folder = tmp_path_factory.mktemp("compressed")
    model = fold_normalization(synthetic_model(tiny_spec, 0))
    contract = InputContract.for_spec(tiny_spec, True)
    paths, details = {}, {}
    for target in (MLPACKAGE, *COMPRESSED_TARGETS):
        paths[target.precision] = folder / target.file_name(tiny_spec.name)
        details[target.precision] = export_coreml(model, contract, paths[target.precision], target,
                                                  {"variant": tiny_spec.name})
    inputs = parity_inputs(tiny_spec.input_size).images[:10]
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    return Compressed(model, inputs, reference, paths, details)


def max_px(candidate: np.ndarray, reference: np.ndarray) -> float:
    assert candidate.shape == reference.shape
    return float(np.abs(candidate.astype(np.float64) - reference.astype(np.float64)).max())


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _mil_ops(spec):
    func = spec.mlProgram.functions["main"]
    return func.block_specializations[func.opset].operations


def _save_ml_program(spec, original: Path, dst: Path) -> Path:
    weights = original / "Data" / "com.apple.CoreML" / "weights"
    ct.models.MLModel(spec, weights_dir=str(weights), skip_model_load=True).save(str(dst))
    return dst


def _final_layer_constexpr(spec, op_type: str):
    """The constexpr op that holds head.final_layer's weight (the heatmap logits)."""
    ops = [op for op in _mil_ops(spec) if op.type == op_type and "final_layer" in op.outputs[0].name]
    assert len(ops) == 1, [op.outputs[0].name for op in _mil_ops(spec) if op.type == op_type]
    return ops[0]


# ---- the targets ----------------------------------------------------------------------------------
def test_compressed_targets_are_named_and_need_ios16():
    assert [t.precision for t in COMPRESSED_TARGETS] == ["int8-weights", "palette6"]
    assert all(t.min_target == "iOS16" and t.convert_to == "mlprogram" and t.compute_precision == "fp16"
               for t in COMPRESSED_TARGETS)
    names = {t.file_name("XS") for t in (MLPACKAGE, *COMPRESSED_TARGETS)}
    assert names == {"XS.mlpackage", "XS_int8-weights.mlpackage", "XS_palette6.mlpackage"}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compressed_package_declares_what_it_holds(compressed, precision):
    path, details = compressed.paths[precision], compressed.details[precision]
    assert details["minimum_deployment_target"] == "iOS16" and details["compute_precision"] == "fp16"
    spec = ct.utils.load_spec(str(path))
    assert spec.specificationVersion == 7  # iOS 16; the iOS 15 package is 6
    assert spec.mlProgram.functions["main"].opset == "CoreML6"
    assert dict(spec.description.metadata.userDefined)["variant"] == "tiny"
    assert declared_precision(path) == "fp16"  # activations stay fp16
    op_type = CONSTEXPR_OP[precision]
    graph = load_coreml(path)
    assert graph.decompressed == details["compression"]["constexpr_ops"] == {op_type: graph.decompressed[op_type]}
    # every conv weight of more than weight_threshold elements is compressed, nothing else
    convs = [op for op in _mil_ops(spec) if op.type == "conv"]
    producers = {op.outputs[0].name: op.type for op in _mil_ops(spec)}
    sizes = {op.outputs[0].name: int(np.prod([d.constant.size for d in op.outputs[0].type.tensorType.dimensions]))
             for op in _mil_ops(spec)}
    weights = [op.inputs["weight"].arguments[0].name for op in convs]
    big = [w for w in weights if sizes[w] > MLPACKAGE_INT8.weight_threshold]  # coremltools: strictly more
    assert big and all(producers[w] == op_type for w in big)
    assert all(producers[w] == "const" for w in weights if w not in big)
    assert graph.decompressed[op_type] == len(big)
    # the soft-argmax's axis indices (the constants its muls take) must stay exact fp16
    indices = [a.name for op in _mil_ops(spec) if op.type == "mul" for a in op.inputs["y"].arguments]
    assert len(indices) == 3 and all(producers[name] == "const" for name in indices), indices


def test_compressed_packages_are_smaller(compressed):
    sizes = {p: package_bytes(path) for p, path in compressed.paths.items()}
    log.info("tiny .mlpackage bytes: %s", sizes)
    assert sizes["palette6"] < sizes["int8-weights"] < sizes["fp16"]


# ---- the evaluator decompresses exactly as coremltools does ------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS)
def test_decompressed_weights_equal_coremltools_decompression(compressed, precision, tmp_path):
    """coremltools' decompress_weights turns each constexpr op back into an fp16 const (its own
    implementation of the op); the evaluator's constants and outputs must be bit-identical to it."""
    path = compressed.paths[precision]
    dense_path = tmp_path / "dense.mlpackage"
    cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)).save(str(dense_path))
    ours, dense = load_coreml(path), load_coreml(dense_path)
    assert dense.decompressed == {}
    compared = 0
    for name, value in ours.constants.items():
        if name.endswith(("_quantized", "_palettized")):
            torch.testing.assert_close(value, dense.constants[name], rtol=0, atol=0)
            compared += 1
    assert compared == ours.decompressed[CONSTEXPR_OP[precision]]
    np.testing.assert_array_equal(evaluate_coreml(path, compressed.inputs),
                                  evaluate_coreml(dense_path, compressed.inputs))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_decompressed_weights_are_close_to_the_fp16_weights(compressed, precision):
    fp16 = load_coreml(compressed.paths["fp16"]).constants
    ours = load_coreml(compressed.paths[precision]).constants
    worst = 0.0
    for name, value in ours.items():
        if not name.endswith(("_quantized", "_palettized")):
            continue
        original = fp16[name.removesuffix("_quantized").removesuffix("_palettized")]
        assert value.shape == original.shape
        if precision == "int8-weights":  # symmetric per output channel: error <= step / 2 (+ fp16 rounding)
            step = original.abs().flatten(1).amax(dim=1) / 127
            bound = step.reshape(-1, *[1] * (original.dim() - 1)) * 0.5 * 1.01 + 1e-3 * original.abs()
            assert ((value - original).abs() <= bound).all(), name
        relative = float((value - original).norm() / original.norm())
        worst = max(worst, relative)
    log.info("%s: worst relative weight error %.4f", precision, worst)
    assert worst < (0.01 if precision == "int8-weights" else 0.05)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compressed_model_matches_pytorch_within_tolerance(compressed, precision):
    joints = evaluate_coreml(compressed.paths[precision], compressed.inputs)
    fp16 = evaluate_coreml(compressed.paths["fp16"], compressed.inputs)
    error, fp16_error = max_px(joints, compressed.reference), max_px(fp16, compressed.reference)
    log.info("tiny %s: max |delta| %.4f px vs PyTorch fp32 (uncompressed fp16 %.4f)", precision, error, fp16_error)
    assert error <= TOLERANCE_PX[precision]
    assert joints.dtype == np.float32 and joints.shape == compressed.reference.shape


# ---- mutations the evaluator must show ------------------------------------------------------------------
def _mutate_blob(path: Path, value, dtype: type, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite in place, inside path's weight.bin, the blob-stored MIL value ``value`` as change(old)."""
    weight_bin = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob = bytearray(weight_bin.read_bytes())
    # metadata record: sentinel, dtype, size in bytes, data offset
    sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", blob, value.blobFileValue.offset)
    assert sentinel == 0xDEADBEEF
    old = np.frombuffer(bytes(blob[offset:offset + size]), dtype=dtype)
    new = np.asarray(change(old.copy()), dtype=dtype)
    assert new.shape == old.shape and not np.array_equal(new, old)
    blob[offset:offset + size] = new.tobytes()
    weight_bin.write_bytes(bytes(blob))


def _mutated_error(compressed: Compressed, precision: str, tmp_path: Path, key: str, dtype: type,
                   change: Callable[[np.ndarray], np.ndarray]) -> float:
    """Joint error after changing parameter ``key`` of the constexpr op holding head.final_layer's weight."""
    path = shutil.copytree(compressed.paths[precision], tmp_path / "mutated.mlpackage")
    op = _final_layer_constexpr(ct.utils.load_spec(str(path)), CONSTEXPR_OP[precision])
    _mutate_blob(path, op.attributes[key], dtype, change)
    error = max_px(evaluate_coreml(path, compressed.inputs), compressed.reference)
    log.info("%s with a mutated %s: %.3f px (tolerance %g)", precision, key, error, TOLERANCE_PX[precision])
    return error


def test_scaled_int8_scale_is_caught(compressed, tmp_path):
    error = _mutated_error(compressed, "int8-weights", tmp_path, "scale", np.float16, lambda s: s * np.float16(1.5))
    assert error > 3 * TOLERANCE_PX["int8-weights"]


def test_shifted_int8_zero_point_is_caught(compressed, tmp_path):
    def shift(zero_point: np.ndarray) -> np.ndarray:
        assert (zero_point == 0).all()  # linear_symmetric
        return zero_point + 20

    assert _mutated_error(compressed, "int8-weights", tmp_path, "zero_point", np.int8, shift) > 3 * TOLERANCE_PX[
        "int8-weights"]


def test_permuted_int8_data_is_caught(compressed, tmp_path):
    """The quantised values themselves: swapping each pair of int8 weights (a transposed/misread layout)."""
    def swap_pairs(data: np.ndarray) -> np.ndarray:
        return data.reshape(-1, 2)[:, ::-1].reshape(-1)

    error = _mutated_error(compressed, "int8-weights", tmp_path, "quantized_data", np.int8, swap_pairs)
    assert error > 3 * TOLERANCE_PX["int8-weights"]


def test_reversed_palette_is_caught(compressed, tmp_path):
    def reverse(lut: np.ndarray) -> np.ndarray:
        assert len(lut) == 64 and (np.diff(lut.astype(np.float32)) >= 0).all()  # kmeans_lut sorts its table
        return lut[::-1]

    assert _mutated_error(compressed, "palette6", tmp_path, "lut", np.float16, reverse) > 1.5 * TOLERANCE_PX["palette6"]


def test_shifted_palette_indices_are_caught(compressed, tmp_path):
    """Indices packed one bit later (an off-by-one in the bit packing) must show."""
    def shift_one_bit(packed: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(packed, bitorder="little")
        return np.packbits(np.concatenate([[0], bits[:-1]]), bitorder="little")

    error = _mutated_error(compressed, "palette6", tmp_path, "indices", np.uint8, shift_one_bit)
    assert error > 1.5 * TOLERANCE_PX["palette6"]


def test_flipped_dequantize_axis_is_refused(compressed, tmp_path):
    """A per-channel scale along the wrong axis is an error, not a silent broadcast."""
    path = compressed.paths["int8-weights"]
    spec = ct.utils.load_spec(str(path))
    op = _final_layer_constexpr(spec, "constexpr_affine_dequantize")
    op.attributes["axis"].immediateValue.tensor.ints.values[0] = 1
    mutated = _save_ml_program(spec, path, tmp_path / "axis.mlpackage")
    with pytest.raises(ExportError, match="constexpr_affine_dequantize.*final_layer.*axis 1"):
        load_coreml(mutated)


# ---- the kernels against the MIL spec and coremltools -----------------------------------------------------
@pytest.mark.parametrize("nbits", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("count", [1, 7, 64, 333])
def test_index_unpacking_matches_coremltools_packing(nbits, count):
    from coremltools.optimize import _utils as optimize_utils

    rng = np.random.default_rng(nbits * 1000 + count)
    elements = rng.integers(0, 1 << nbits, count).astype(np.uint8)
    packed = optimize_utils.pack_elements_into_bits(elements, nbits)
    assert len(packed) == -(-nbits * count // 8)
    np.testing.assert_array_equal(unpack_indices(torch.from_numpy(packed), nbits, count).numpy(), elements)


def test_lut_to_dense_follows_the_documented_packing_example():
    """MIL docs: n_bits 2, shape (5,): byte 0 = i3 i2 i1 i0 from MSB to LSB, byte 1 holds i4 in its LSBs."""
    indices = torch.tensor([0b01_10_11_00, 0b000000_11], dtype=torch.uint8)
    lut = torch.tensor([10.0, 11.0, 12.0, 13.0], dtype=torch.float16)
    dense = lut_to_dense(indices, lut, [5])
    assert dense.dtype == torch.float16 and dense.tolist() == [10.0, 13.0, 12.0, 11.0, 13.0]
    with pytest.raises(ExportError, match="index bytes"):
        lut_to_dense(indices[:1], lut, [5])
    with pytest.raises(ExportError, match="lut"):
        lut_to_dense(indices, lut[:3], [5])


def test_affine_dequantize_broadcasts_along_its_axis():
    data = torch.tensor([[-128, 0, 127], [1, 2, 3]], dtype=torch.int8)
    scale = torch.tensor([0.5, 2.0], dtype=torch.float16)
    out = affine_dequantize(data, torch.tensor([0, 1], dtype=torch.int8), scale, 0)
    assert out.dtype == torch.float16 and out.tolist() == [[-64.0, 0.0, 63.5], [0.0, 2.0, 4.0]]
    out = affine_dequantize(data, torch.tensor(1.0), torch.tensor([1.0, 2.0, 4.0]), -1)  # fp32 zero point
    assert out.dtype == torch.float32 and out.tolist() == [[-129.0, -2.0, 504.0], [0.0, 2.0, 8.0]]
    with pytest.raises(ExportError, match="scale"):
        affine_dequantize(data, torch.tensor(0, dtype=torch.int8), scale, 1)


def test_kmeans_lut_is_a_sorted_nearest_entry_palette():
    rng = np.random.default_rng(0)
    weight = (rng.standard_t(4, size=(32, 16, 3, 3)) * 0.05).astype(np.float16)
    lut, indices = kmeans_lut(weight)
    assert lut.dtype == np.float16 and lut.shape == (64,) and indices.dtype == np.uint8 and indices.size == weight.size
    assert (np.diff(lut.astype(np.float32)) >= 0).all()
    w, table = weight.ravel().astype(np.float32), lut.astype(np.float32)
    nearest = np.abs(w[:, None] - table[None]).min(axis=1)
    np.testing.assert_array_equal(np.abs(w - table[indices]), nearest)
    uniform = np.linspace(w.min(), w.max(), 64)  # coremltools' "uniform" palette
    uniform_error = np.abs(w[:, None] - uniform[None]).min(axis=1)
    assert np.square(nearest).mean() < 0.8 * np.square(uniform_error).mean()  # measured 0.66: what k-means is for
    lut2, indices2 = kmeans_lut(weight)
    np.testing.assert_array_equal(lut, lut2)
    np.testing.assert_array_equal(indices, indices2)
    few = np.array([0.5, -1.0, 0.5, 2.0], dtype=np.float16)  # fewer values than entries: exact
    lut3, indices3 = kmeans_lut(few)
    np.testing.assert_array_equal(lut3[indices3], few)


# ---- what it refuses to guess ------------------------------------------------------------------------------
def test_supported_constexpr_ops():
    assert SUPPORTED_CONSTEXPR_OPS == ("constexpr_affine_dequantize", "constexpr_lut_to_dense")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ios18_compressed_weights_are_refused(precision, tmp_path):
    """An iOS 18 target stores compressed weights as constexpr_blockwise_shift_scale, or as a
    constexpr_lut_to_dense with another signature: refused by name, never misread."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()).eval()
    traced = torch.jit.trace(module, torch.zeros(1, 4, 6, 6))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 4, 6, 6))], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS18)
    target = MLPACKAGE_INT8 if precision == "int8-weights" else MLPACKAGE_PALETTE6
    compress, config, _ = _compression_config(dataclasses.replace(target, weight_threshold=0))
    compress(mlmodel, config=config).save(str(tmp_path / "ios18.mlpackage"))
    expected = "constexpr_blockwise_shift_scale" if precision == "int8-weights" else "constexpr_lut_to_dense"
    with pytest.raises(UnsupportedOpError, match=f"'{expected}'") as info:
        load_coreml(tmp_path / "ios18.mlpackage")
    assert info.value.op_type == expected


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compressed_weights_under_fp16_accumulation(compressed, precision, tmp_path):
    """The fp16-accumulation mode sums the decompressed fp16 weights: the same joints as coremltools' own
    decompressed twin of the file, and within the compression tolerance of PyTorch."""
    path = compressed.paths[precision]
    dense_path = tmp_path / "dense.mlpackage"
    cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)).save(str(dense_path))
    joints = evaluate_coreml(path, compressed.inputs, accumulation="fp16")
    np.testing.assert_array_equal(joints, evaluate_coreml(dense_path, compressed.inputs, accumulation="fp16"))
    assert max_px(joints, compressed.reference) <= TOLERANCE_PX[precision]
