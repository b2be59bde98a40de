"""The Core ML reference evaluator: parity with PyTorch on saved files, op kernels against torch,
and mutated models it must catch (a checker that cannot fail proves nothing)."""

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
from torch.nn import functional as F

from common.errors import ExportError
from exporters.converters.to_coreml import export_coreml
from exporters.formats import MLMODEL, MLPACKAGE
from judging.gates import beyond_emulation, conversion_check
from judging.inputs import parity_inputs
from judging.parity import parity_stats
from judging.references import References
from models.contract import InputContract
from models.folding import fold_normalization
from models.network import ConvNeXtPose, SoftArgmax3D
from models.spec import REGISTRY, ModelSpec
from models.synthetic.untrained import synthetic_model
from runtimes.coreml_reference import (
    UnsupportedOpError,
    declared_precision,
    evaluate_coreml,
    kernels,
    load_coreml,
)
from runtimes.coreml_reference import fp16_accumulation as fp16_sums

ct = pytest.importorskip("coremltools")

log = logging.getLogger(__name__)

TINY = ModelSpec("tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                 depth_bins=8, joints=5, input_size=64)
MLPACKAGE_FP32 = dataclasses.replace(MLPACKAGE, precision="fp32")  # same ML Program, computed in fp32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Exported:
    model: ConvNeXtPose
    inputs: np.ndarray
    reference: np.ndarray
    mlmodel: Path
    mlpackage: Path
    refs: References  # the export gate's references (judging/references.py)

    def fp32_ok(self, joints: np.ndarray) -> bool:
        """The export gate's answer for an fp32 artifact: within the noise floor of the exact reference."""
        check = conversion_check(joints, self.refs)
        log.info("fp32 check: %s", check.describe())
        return check.passed

    def fp16_ok(self, joints: np.ndarray, arithmetic: str = "fp16") -> bool:
        """Consistent with PyTorch's own fp16 arithmetic (what labels a rejection a conversion error)."""
        cost = parity_stats(joints, self.refs.fp32, self.refs.spec)
        own = parity_stats(self.refs.emulated(arithmetic), self.refs.fp32, self.refs.spec)
        log.info("%s cost p99 %.3g input px, PyTorch's own %.3g", arithmetic, cost.p99_input_px, own.p99_input_px)
        return not beyond_emulation(cost, own)


def export_variant(spec: ModelSpec, folder: Path, n_inputs: int) -> Exported:
    original = synthetic_model(spec, 0)
    model = fold_normalization(original)
    contract = InputContract.for_spec(spec, True)
    paths = {}
    for target in (MLMODEL, MLPACKAGE):
        paths[target.suffix] = folder / f"{spec.name}{target.suffix}"
        export_coreml(model, contract, paths[target.suffix], target, {"variant": spec.name})
    inputs = parity_inputs(spec.input_size).images[:n_inputs]
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    return Exported(model, inputs, reference, paths[".mlmodel"], paths[".mlpackage"], References(original, inputs))


def max_px(candidate: np.ndarray, reference: np.ndarray) -> float:
    assert candidate.shape == reference.shape
    return float(np.abs(candidate.astype(np.float64) - reference.astype(np.float64)).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Exported:
    return export_variant(TINY, tmp_path_factory.mktemp("tiny"), n_inputs=10)


# ---- parity on the exported ConvNeXtPose --------------------------------------------------------
def test_fp32_mlmodel_matches_pytorch(tiny):
    assert declared_precision(tiny.mlmodel) == "fp32"
    assert tiny.fp32_ok(evaluate_coreml(tiny.mlmodel, tiny.inputs))


def test_fp16_mlpackage_shows_its_fp16_error_within_tolerance(tiny):
    assert declared_precision(tiny.mlpackage) == "fp16"
    joints = evaluate_coreml(tiny.mlpackage, tiny.inputs)
    assert joints.dtype == np.float32 and joints.shape == (len(tiny.inputs), TINY.joints, 3)
    assert tiny.fp16_ok(joints)
    assert not tiny.fp32_ok(joints), "an fp16 program evaluated like fp32 would hide its fp16 error"


def test_an_fp32_ml_program_is_evaluated_in_fp32(tiny, tmp_path):
    """The same program converted at fp32: its error drops to fp32 level, so the fp16 error above is fp16's."""
    path = tmp_path / "tiny32.mlpackage"
    export_coreml(tiny.model, InputContract.for_spec(TINY, True), path, MLPACKAGE_FP32, {"variant": "tiny"})
    assert declared_precision(path) == "fp32"
    assert tiny.fp32_ok(evaluate_coreml(path, tiny.inputs))


def test_fp16_weights_in_an_mlmodel_are_read(tiny, tmp_path):
    """A NeuralNetwork with half-precision weights (float16Value): fp16 weights, fp32 compute."""
    from coremltools.models.neural_network import quantization_utils

    mlmodel = ct.models.MLModel(str(tiny.mlmodel), skip_model_load=True)
    quantization_utils.quantize_weights(mlmodel, nbits=16).save(str(tmp_path / "half.mlmodel"))
    layers = ct.utils.load_spec(str(tmp_path / "half.mlmodel")).neuralNetwork.layers
    assert len(layers[0].convolution.weights.float16Value) and not len(layers[0].convolution.weights.floatValue)
    assert declared_precision(tmp_path / "half.mlmodel") == "fp32"
    joints = evaluate_coreml(tmp_path / "half.mlmodel", tiny.inputs)
    assert not tiny.fp32_ok(joints) and tiny.fp16_ok(joints, "fp16-weights")


def test_xs_both_formats_match_pytorch(tmp_path):
    xs = export_variant(REGISTRY["XS"], tmp_path, n_inputs=2)
    assert xs.fp32_ok(evaluate_coreml(xs.mlmodel, xs.inputs))
    fp16 = evaluate_coreml(xs.mlpackage, xs.inputs)
    assert xs.fp16_ok(fp16) and max_px(fp16, xs.reference) > 0


# ---- kernels against torch and against Core ML's documented sampling grids ----------------------
@pytest.mark.parametrize(
    ("mode", "n_out", "documented"),
    [  # the example grids of coremltools' upsample_bilinear / resize_bilinear docstrings (Xin = 2)
        ("half_pixel", 5, [0.0, 0.1, 0.5, 0.9, 1.0]),
        ("half_pixel", 6, [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]),
        ("align_corners", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("align_corners", 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        ("default", 5, [0.0, 0.4, 0.8, 1.0, 1.0]),
        ("default", 6, [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
        ("offset_corners", 5, [0.1, 0.3, 0.5, 0.7, 0.9]),
        ("offset_corners", 6, [1 / 12, 0.25, 5 / 12, 7 / 12, 0.75, 11 / 12]),
    ],
)
def test_sampling_grids_are_the_documented_ones(mode, n_out, documented):
    np.testing.assert_allclose(kernels.sample_grid(2, n_out, mode).numpy(), documented, atol=1e-9)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("out_hw", [(8, 8), (7, 5), (3, 2)])  # x2, fractional, downscale
def test_bilinear_kernel_matches_torch(align_corners, out_hw):
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mode = "align_corners" if align_corners else "half_pixel"
    expected = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(kernels.resize_bilinear(x, *out_hw, mode), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel", [3, 4])
def test_same_padding_matches_torch(kernel):
    x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, kernel, kernel)
    pads = kernels.same_pads((9, 9), (kernel, kernel), (1, 1), (1, 1), top_left_heavy=False)
    torch.testing.assert_close(kernels.conv2d(x, w, None, (1, 1), pads, (1, 1), 1), F.conv2d(x, w, padding="same"))


# ---- each op through a real converted file, in both formats -------------------------------------
class Fn(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _batchnorm() -> nn.Module:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return nn.Sequential(nn.ReLU(), bn)  # the ReLU keeps the converter from folding it away


def _softmax_over_groups(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.reshape(1, 4, 36), dim=-1).reshape(1, 4, 6, 6)


TAIL_SPEC = ModelSpec("tail", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                      depth_bins=8, joints=3, input_size=64)  # 8x8x8 heatmaps of 3 joints
OP_CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), (1, 4, 6, 6)),
    "conv_depthwise": (lambda: nn.Conv2d(4, 4, 7, padding=3, groups=4), (1, 4, 6, 6)),
    "conv_grouped_dilated": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False), (1, 4, 6, 6)),
    "conv_same_even_kernel": (lambda: nn.Conv2d(4, 4, 4, padding="same"), (1, 4, 6, 6)),
    "batchnorm": (_batchnorm, (1, 4, 6, 6)),
    "upsample_x2_align_corners": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), (1, 4, 6, 6)),
    "upsample_x2_half_pixel": (lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), (1, 4, 6, 6)),
    "resize_7x5_align_corners": (lambda: Fn(lambda x: F.interpolate(x, (7, 5), mode="bilinear", align_corners=True)),
                                 (1, 4, 6, 6)),
    "resize_7x5_half_pixel": (lambda: Fn(lambda x: F.interpolate(x, (7, 5), mode="bilinear", align_corners=False)),
                              (1, 4, 6, 6)),
    "softmax_channels": (lambda: nn.Softmax(dim=1), (1, 4, 6, 6)),
    "reshape_softmax_reshape": (lambda: Fn(_softmax_over_groups), (1, 4, 6, 6)),
    "transpose_reshape": (lambda: Fn(lambda x: x.permute(0, 2, 3, 1).reshape(1, 36, 4)), (1, 4, 6, 6)),
    "matmul": (lambda: Fn(lambda x: torch.matmul(x.transpose(1, 2), x)), (1, 5, 3)),
    "linear": (lambda: nn.Linear(8, 3), (1, 5, 8)),
    "reductions": (lambda: Fn(lambda x: x.sum(dim=(2, 3)) * x.mean(dim=1).amax(dim=(1, 2))[:, None]), (1, 4, 6, 6)),
    "residual_add_mul": (lambda: Fn(lambda x: x + torch.relu(x) * x), (1, 4, 6, 6)),
    "broadcast_arithmetic": (lambda: Fn(lambda x: (x - x.mean(dim=1, keepdim=True)) / (x.amax(dim=1, keepdim=True) + 5)
                                        * x.sum(dim=2, keepdim=True)), (1, 4, 6, 6)),
    "squeeze": (lambda: Fn(lambda x: x.sum(dim=3, keepdim=True).squeeze(3)), (1, 4, 6, 6)),
    "concat_arithmetic": (lambda: Fn(lambda x: torch.cat([x, x * 2 - 1], dim=1) / 3
                                     - torch.cat([x.sigmoid(), x.tanh()], dim=1)), (1, 4, 6, 6)),
    # the fp16-safe soft-argmax: max-shifted exp, sums one axis at a time, index products, concat, division
    "soft_argmax_tail": (lambda: SoftArgmax3D(TAIL_SPEC), (1, TAIL_SPEC.output_channels, 8, 8)),
}
FORMATS = ("mlprogram", "neuralnetwork")


def convert_module(module: nn.Module, shape: tuple[int, ...], convert_to: str, path: Path,
                   precision: str = "fp32") -> Path:
    """``precision``: of an ML Program ("fp16": fp16 weights and activations, as the pose .mlpackage)."""
    traced = torch.jit.trace(module.eval(), torch.zeros(shape))
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    kwargs = {"compute_precision": compute} if convert_to == "mlprogram" else {}
    target = ct.target.iOS15 if convert_to == "mlprogram" else ct.target.iOS14
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], outputs=[ct.TensorType(name="y")],
                         convert_to=convert_to, minimum_deployment_target=target, **kwargs)
    path = path.with_suffix(".mlpackage" if convert_to == "mlprogram" else ".mlmodel")
    mlmodel.save(str(path))
    return path


@pytest.fixture(scope="module")
def converted_ops(tmp_path_factory) -> Callable[..., tuple[Path, torch.Tensor, torch.Tensor]]:
    """converted_ops(case, format, precision="fp32") -> (saved file, input, torch output), converted once per
    module; the modules behind one case are the same (seeded) at either precision."""
    folder = tmp_path_factory.mktemp("ops")
    cache: dict[tuple[str, str, str], tuple[Path, torch.Tensor, torch.Tensor]] = {}

    def get(case: str, convert_to: str, precision: str = "fp32") -> tuple[Path, torch.Tensor, torch.Tensor]:
        key = (case, convert_to, precision)
        if key not in cache:
            torch.manual_seed(0)
            make, shape = OP_CASES[case]
            module = make().eval()
            x = torch.randn(shape)
            with torch.no_grad():
                y = module(x)
            suffix = "" if precision == "fp32" else f"-{precision}"
            path = convert_module(module, shape, convert_to, folder / f"{case}-{convert_to}{suffix}", precision)
            cache[key] = path, x, y
        return cache[key]

    return get


@pytest.mark.parametrize("convert_to", FORMATS)
@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_matches_torch(converted_ops, case, convert_to):
    path, x, expected = converted_ops(case, convert_to)
    got = evaluate_coreml(path, x.numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=2e-5, rtol=1e-5)


GRID_OF_SAMPLING_MODE = {"STRICT_ALIGN_CORNERS": "align_corners", "ALIGN_CORNERS": "align_corners_centred",
                         "DEFAULT": "default", "OFFSET_CORNERS": "offset_corners", "UNALIGN_CORNERS": "half_pixel"}


@pytest.mark.parametrize(
    ("sampling_mode", "convert_to"),
    [(m, f) for m in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")
     for f in FORMATS if (m, f) != ("UNALIGN_CORNERS", "neuralnetwork")],  # no UNALIGN_CORNERS in NeuralNetwork
)
def test_resize_bilinear_sampling_modes_are_read(sampling_mode, convert_to, tmp_path):
    """resize_bilinear (MIL) / resizeBilinear (NN), which the torch converter never emits, built directly."""
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 4, 5))], opset_version=ct.target.iOS15)
    def program(x):
        return mb.resize_bilinear(x=x, target_size_height=7, target_size_width=3, sampling_mode=sampling_mode,
                                  name="y")

    kwargs = {"compute_precision": ct.precision.FLOAT32} if convert_to == "mlprogram" else {}
    path = tmp_path / ("m.mlpackage" if convert_to == "mlprogram" else "m.mlmodel")
    ct.convert(program, convert_to=convert_to, **kwargs).save(str(path))
    x = torch.randn(1, 2, 4, 5)
    got = torch.from_numpy(evaluate_coreml(path, x.numpy()))
    torch.testing.assert_close(got, kernels.resize_bilinear(x, 7, 3, GRID_OF_SAMPLING_MODE[sampling_mode]))
    if sampling_mode in ("STRICT_ALIGN_CORNERS", "UNALIGN_CORNERS"):  # the two torch has
        torch.testing.assert_close(got, F.interpolate(x, size=(7, 3), mode="bilinear",
                                                      align_corners=sampling_mode == "STRICT_ALIGN_CORNERS"))


def test_fp16_program_rounds_weights_and_activations_to_fp16(tmp_path):
    """An fp16 conv is the fp32 conv of fp16-rounded input and weights, rounded to fp16 again."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1).eval()
    x = torch.randn(1, 4, 6, 6)
    traced = torch.jit.trace(conv, x)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=x.shape)], convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS15)
    mlmodel.save(str(tmp_path / "conv16.mlpackage"))
    assert declared_precision(tmp_path / "conv16.mlpackage") == "fp16"
    got = evaluate_coreml(tmp_path / "conv16.mlpackage", x.numpy())
    half = lambda t: t.half().float()
    with torch.no_grad():
        emulated = half(F.conv2d(half(x), half(conv.weight), half(conv.bias), padding=1))
        exact = conv(x)
    np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))  # fp16 values, returned as fp32
    np.testing.assert_allclose(got, emulated.numpy(), rtol=2e-3, atol=2e-3)  # one fp16 ulp of summation order
    assert np.abs(got - exact.numpy()).max() > 1e-4, "the fp16 rounding did not happen"


def test_the_op_cases_cover_what_the_pose_models_contain(tiny, converted_ops):
    """Every op kind in the exported pose models also has a one-op test above."""
    for path, convert_to in ((tiny.mlmodel, "neuralnetwork"), (tiny.mlpackage, "mlprogram")):
        covered = {"cast"}  # fp16 casts: test_fp16_program_rounds_weights_and_activations_to_fp16
        for case in OP_CASES:
            covered |= set(load_coreml(converted_ops(case, convert_to)[0]).op_types)
        assert set(load_coreml(path).op_types) <= covered


# ---- mutations: the evaluator reads the file, so a broken file must show ------------------------
def _copy_package(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _save_ml_program(spec, original: Path, dst: Path) -> Path:
    weights = original / "Data" / "com.apple.CoreML" / "weights"
    ct.models.MLModel(spec, weights_dir=str(weights), skip_model_load=True).save(str(dst))
    return dst


def _mil_ops(spec):
    func = spec.mlProgram.functions["main"]
    return func.block_specializations[func.opset].operations


def _mil_const(spec, name: str):
    return next(op for op in _mil_ops(spec) if op.type == "const" and op.outputs[0].name == name)


def _const_value(spec, op, key: str):
    """The (mutable) immediate tensor value of the const bound to op's input `key`."""
    return _mil_const(spec, op.inputs[key].arguments[0].name).attributes["val"].immediateValue.tensor


def test_flipped_align_corners_in_mlmodel_is_caught(tiny, tmp_path):
    spec = ct.utils.load_spec(str(tiny.mlmodel))
    upsamples = [layer.upsample for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") == "upsample"]
    assert upsamples and all(u.linearUpsampleMode == u.ALIGN_CORNERS_TRUE for u in upsamples)
    for u in upsamples:
        u.linearUpsampleMode = u.ALIGN_CORNERS_FALSE
    ct.utils.save_spec(spec, str(tmp_path / "flipped.mlmodel"))
    assert not tiny.fp32_ok(evaluate_coreml(tmp_path / "flipped.mlmodel", tiny.inputs))


def test_flipped_align_corners_in_mlpackage_is_caught(tiny, tmp_path):
    spec = ct.utils.load_spec(str(tiny.mlpackage))
    flags = [op.inputs["align_corners"].arguments[0].name for op in _mil_ops(spec) if op.type == "upsample_bilinear"]
    assert flags
    for name in flags:
        value = _mil_const(spec, name).attributes["val"].immediateValue.tensor.bools
        assert list(value.values) == [True]
        value.values[0] = False
    path = _save_ml_program(spec, tiny.mlpackage, tmp_path / "flipped.mlpackage")
    assert not tiny.fp16_ok(evaluate_coreml(path, tiny.inputs))


def _blob_data_offset(blob: bytes, metadata_offset: int) -> tuple[int, int]:
    """(data offset, size in bytes) from a weight.bin metadata record: sentinel, dtype, size, offset."""
    sentinel, _dtype, size, offset = struct.unpack_from("<IIQQ", blob, metadata_offset)
    assert sentinel == 0xDEADBEEF
    return offset, size


def test_scaled_weight_blob_in_mlpackage_is_caught(tiny, tmp_path):
    path = _copy_package(tiny.mlpackage, tmp_path / "scaled.mlpackage")
    spec = ct.utils.load_spec(str(path))
    const = _mil_const(spec, "head_final_layer_weight_to_fp16").attributes["val"]
    weight_bin = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob = bytearray(weight_bin.read_bytes())
    offset, size = _blob_data_offset(bytes(blob), const.blobFileValue.offset)
    weights = np.frombuffer(blob, dtype=np.float16, count=size // 2, offset=offset)
    blob[offset:offset + size] = (weights * np.float16(1.5)).tobytes()
    weight_bin.write_bytes(bytes(blob))
    assert not tiny.fp16_ok(evaluate_coreml(path, tiny.inputs))


def test_scaled_weight_in_mlmodel_spec_is_caught(tiny, tmp_path):
    spec = ct.utils.load_spec(str(tiny.mlmodel))
    final = next(layer for layer in spec.neuralNetwork.layers if layer.name == "heatmaps")
    values = np.asarray(final.convolution.weights.floatValue, dtype=np.float32)
    final.convolution.weights.ClearField("floatValue")
    final.convolution.weights.floatValue.extend((values * 1.5).tolist())
    ct.utils.save_spec(spec, str(tmp_path / "scaled.mlmodel"))
    assert not tiny.fp32_ok(evaluate_coreml(tmp_path / "scaled.mlmodel", tiny.inputs))


def test_a_soft_argmax_maximum_over_the_wrong_axis_is_caught(tiny, tmp_path):
    spec = ct.utils.load_spec(str(tiny.mlpackage))
    reduce_max = next(op for op in _mil_ops(spec) if op.type == "reduce_max")
    axes = _const_value(spec, reduce_max, "axes").ints
    assert list(axes.values) == [2]
    axes.values[0] = 1  # over the joints instead of the voxels of one joint: each voxel shifted by its own max
    path = _save_ml_program(spec, tiny.mlpackage, tmp_path / "axis.mlpackage")
    assert not tiny.fp16_ok(evaluate_coreml(path, tiny.inputs))


@pytest.mark.parametrize("convert_to", FORMATS)
def test_swapped_transpose_perm_is_caught(converted_ops, convert_to, tmp_path):
    path, x, expected = converted_ops("transpose_reshape", convert_to)
    spec = ct.utils.load_spec(str(path))
    if convert_to == "neuralnetwork":
        perm = next(layer.transpose.axes for layer in spec.neuralNetwork.layers
                    if layer.WhichOneof("layer") == "transpose")
    else:
        op = next(op for op in _mil_ops(spec) if op.type == "transpose")
        perm = _const_value(spec, op, "perm").ints.values
    assert list(perm) == [0, 2, 3, 1]
    perm[1], perm[2] = 3, 2  # (0, 3, 2, 1): the same shape for a square input, a transposed image
    mutated = _save(spec, path, tmp_path, convert_to)
    assert max_px(evaluate_coreml(mutated, x.numpy()), expected.numpy()) > 0.1


@pytest.mark.parametrize("convert_to", FORMATS)
def test_swapped_reshape_target_is_caught(converted_ops, convert_to, tmp_path):
    path, x, expected = converted_ops("reshape_softmax_reshape", convert_to)
    spec = ct.utils.load_spec(str(path))
    if convert_to == "neuralnetwork":
        target = next(layer.reshapeStatic.targetShape for layer in spec.neuralNetwork.layers
                      if layer.WhichOneof("layer") == "reshapeStatic")
    else:
        op = next(op for op in _mil_ops(spec) if op.type == "reshape")
        target = _const_value(spec, op, "shape").ints.values
    assert list(target)[-2:] == [4, 36]
    target[-2], target[-1] = 36, 4  # softmax then runs over groups of 4 instead of 36
    mutated = _save(spec, path, tmp_path, convert_to)
    assert max_px(evaluate_coreml(mutated, x.numpy()), expected.numpy()) > 0.01


def _save(spec, original: Path, folder: Path, convert_to: str) -> Path:
    if convert_to == "mlprogram":
        return _save_ml_program(spec, original, folder / "mutated.mlpackage")
    ct.utils.save_spec(spec, str(folder / "mutated.mlmodel"))
    return folder / "mutated.mlmodel"


# ---- what it refuses to guess ----------------------------------------------------------------------
def test_unknown_mil_op_is_named(tiny, tmp_path):
    spec = ct.utils.load_spec(str(tiny.mlpackage))
    relu = next(op for op in _mil_ops(spec) if op.type == "relu")
    relu.type = "silu"
    name = relu.attributes["name"].immediateValue.tensor.strings.values[0]
    path = _save_ml_program(spec, tiny.mlpackage, tmp_path / "silu.mlpackage")
    with pytest.raises(UnsupportedOpError, match=f"'silu'.*'{name}'") as info:
        evaluate_coreml(path, tiny.inputs[:1])
    assert isinstance(info.value, ExportError)
    assert (info.value.op_type, info.value.op_name) == ("silu", name)


@pytest.mark.parametrize("mutate", ["gelu_layer", "leaky_relu_activation"])
def test_unknown_nn_layer_is_named(tiny, tmp_path, mutate):
    spec = ct.utils.load_spec(str(tiny.mlmodel))
    layer = next(layer for layer in spec.neuralNetwork.layers if layer.WhichOneof("layer") == "activation")
    if mutate == "gelu_layer":
        layer.gelu.SetInParent()
        expected = "gelu"
    else:
        layer.activation.leakyReLU.alpha = 0.1
        expected = "activation.leakyReLU"
    ct.utils.save_spec(spec, str(tmp_path / "unknown.mlmodel"))
    with pytest.raises(UnsupportedOpError, match=f"'{expected}'.*'{layer.name}'"):
        evaluate_coreml(tmp_path / "unknown.mlmodel", tiny.inputs[:1])


def test_an_op_input_it_does_not_understand_is_refused(tiny, tmp_path):
    """A known op with an extra input (as a newer opset might add) is refused, not run without it."""
    spec = ct.utils.load_spec(str(tiny.mlpackage))
    upsample = next(op for op in _mil_ops(spec) if op.type == "upsample_bilinear")
    upsample.inputs["antialias"].arguments.add().name = upsample.inputs["align_corners"].arguments[0].name
    path = _save_ml_program(spec, tiny.mlpackage, tmp_path / "extra.mlpackage")
    with pytest.raises(UnsupportedOpError, match="'upsample_bilinear'.*antialias"):
        evaluate_coreml(path, tiny.inputs[:1])


# ---- the fp16-accumulation mode through saved files (its kernels: test_coreml_fp16_accumulation.py) -----
NO_SUMS = ("transpose_reshape", "residual_add_mul", "concat_arithmetic")  # cases with no op that sums
#: Max |delta| under the mode vs torch fp32, relative to the case's largest output (at least 1). Measured: at most
#: 0.0014 (broadcast_arithmetic, concat_arithmetic); conv cases 0.0006-0.0016, the soft-argmax tail 0.0009.
FP16_SUMS_TOLERANCE = 0.01


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_op_under_fp16_accumulation(converted_ops, case):
    """Every op case as an fp16 ML Program: fp16 outputs close to torch's fp32; where nothing sums, bit-identical
    to the default mode (elementwise fp16 ops round once in either mode)."""
    path, x, expected = converted_ops(case, "mlprogram", "fp16")
    got = evaluate_coreml(path, x.numpy(), accumulation="fp16")
    np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))
    if case in NO_SUMS:
        np.testing.assert_array_equal(got, evaluate_coreml(path, x.numpy()))
    scale = float(np.abs(expected.numpy()).max())
    error = float(np.abs(got - expected.numpy()).max())
    log.info("%s under fp16 accumulation: max |delta| %.3g of %.3g", case, error, scale)
    assert error <= FP16_SUMS_TOLERANCE * max(scale, 1.0)


def _op_module(case: str) -> tuple[nn.Module, torch.Tensor]:
    """The module and input converted_ops built for ``case`` (same seed, same order of draws)."""
    torch.manual_seed(0)
    make, shape = OP_CASES[case]
    module = make().eval()
    return module, torch.randn(shape)


@pytest.mark.parametrize("case", ["conv", "conv_depthwise", "conv_grouped_dilated", "conv_same_even_kernel",
                                  "linear", "matmul"])
def test_a_summing_op_in_a_file_runs_the_fp16_kernel_with_its_parameters(converted_ops, case):
    """The file under the mode is the fp16 kernel applied to the module's fp16-rounded weights with the module's
    stride, padding, dilation and groups: the reader hands the kernel the right parameters."""
    path, _, _ = converted_ops(case, "mlprogram", "fp16")
    module, x = _op_module(case)
    with torch.no_grad():
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size
            pads = kernels.same_pads((6, 6), k, module.stride, module.dilation, False) if module.padding == "same" \
                else (module.padding[0],) * 2 + (module.padding[1],) * 2
            bias = None if module.bias is None else module.bias.half()
            expected = fp16_sums.conv2d(x.half(), module.weight.half(), bias, module.stride, pads, module.dilation,
                                        module.groups)
        elif isinstance(module, nn.Linear):
            expected = fp16_sums.linear(x.half(), module.weight.half(), module.bias.half())
        else:
            expected = fp16_sums.matmul(x.half().transpose(1, 2), x.half())
    np.testing.assert_array_equal(evaluate_coreml(path, x.numpy(), accumulation="fp16"), expected.float().numpy())


def test_the_tiny_pose_mlpackage_under_fp16_accumulation_stays_close_to_the_default(tiny):
    """Every joint within the fp16 budget (1 input px) of the default mode's (measured: 0.28 px), and still
    consistent with PyTorch's own fp16 arithmetic; but not identical: the mode must change something."""
    default = evaluate_coreml(tiny.mlpackage, tiny.inputs)
    worst = evaluate_coreml(tiny.mlpackage, tiny.inputs, accumulation="fp16")
    moved = max_px(worst, default) * TINY.input_size / TINY.heatmap_size
    log.info("tiny .mlpackage: fp16 accumulation moves joints by up to %.3g input px", moved)
    assert 0 < moved < 1.0
    assert tiny.fp16_ok(worst)


def test_fp16_accumulation_is_refused_where_nothing_computes_in_fp16(tiny, converted_ops):
    """A NeuralNetwork (.mlmodel) and an fp32 ML Program have no fp16 sums: the mode is refused, not a no-op that
    would label fp32 figures fp16's; the export's helper says it does not apply (None)."""
    from runtimes.coreml import fp16_accumulation_check

    fp32_program, x, _ = converted_ops("conv", "mlprogram")
    for path, inputs in ((tiny.mlmodel, tiny.inputs[:1]), (fp32_program, x.numpy())):
        with pytest.raises(ExportError, match="fp16 accumulation applies to fp16 ML Programs"):
            evaluate_coreml(path, inputs, accumulation="fp16")
        assert fp16_accumulation_check(path, inputs) is None
    with pytest.raises(ValueError, match="unknown accumulation 'fp8'"):
        evaluate_coreml(tiny.mlpackage, tiny.inputs[:1], accumulation="fp8")


def test_fp16_accumulation_through_a_session_and_the_export_helper(tiny):
    from runtimes.coreml import FP16_ACCUMULATION, fp16_accumulation_check, intermediate_tensors, open_session

    expected = evaluate_coreml(tiny.mlpackage, tiny.inputs[:2], accumulation="fp16")
    session = open_session(tiny.mlpackage, 1, "NCHW", accumulation="fp16")
    assert session.runtime == FP16_ACCUMULATION and not session.timed
    np.testing.assert_array_equal(session.run_all(tiny.inputs[:2]), expected)
    np.testing.assert_array_equal(fp16_accumulation_check(tiny.mlpackage, tiny.inputs[:2]), expected)
    _, last = intermediate_tensors(tiny.mlpackage, tiny.inputs[:1], accumulation="fp16")[-1]
    np.testing.assert_array_equal(last, expected[:1])


class MatmulSoftArgmax(nn.Module):
    """The soft-argmax before the fp16-safe rewrite (commit 45cd0d0): a softmax over the D*H*W voxels, then one
    matmul with the (D*H*W, 3) coordinate table."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.joints = spec.joints
        self.register_buffer("coords", SoftArgmax3D(spec).coords)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(heatmaps.reshape(-1, self.joints, self.coords.shape[0]), dim=2)
        return torch.matmul(probs, self.coords)


XS_TAIL = dataclasses.replace(TAIL_SPEC, input_size=256, depth_bins=32)  # XS's 32x32x32 heatmaps, 3 joints


def blob_logits(spec: ModelSpec, seed: int, height: float = 8.0, width: float = 1.5) -> np.ndarray:
    """(1, J*D, H, W) logits: per joint a Gaussian blob of ``height`` over N(0, 1) noise, as a heatmap head gives."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in spec.heatmap_shape), indexing="ij")
    joints = []
    for _ in range(spec.joints):
        cx, cy, cz = rng.uniform(4, min(spec.heatmap_shape) - 4, 3)
        blob = height * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width**2))
        joints.append(blob + rng.standard_normal(spec.heatmap_shape))
    return np.stack(joints).reshape(1, spec.output_channels, spec.heatmap_size, spec.heatmap_size).astype(np.float32)


def test_the_mode_sees_the_old_soft_argmax_lose_the_pose_and_the_new_one_keep_it(tmp_path):
    """What issue 34 describes, on XS-sized heatmaps (32,768 voxels a joint): the old tail's softmax normaliser and
    its 32,768-term matmul stagnate in fp16 and move joints by ~20 input px (measured 20.3), the per-axis marginal
    sums of the new one by ~0.15 px; the default mode (fp32 inside each op) sees neither (<= 0.14 px)."""
    x = blob_logits(XS_TAIL, 0)
    with torch.no_grad():
        exact = SoftArgmax3D(XS_TAIL)(torch.from_numpy(x).double()).numpy()
    to_input = XS_TAIL.input_size / XS_TAIL.heatmap_size
    moved = {}
    for name, tail in (("new", SoftArgmax3D(XS_TAIL)), ("old", MatmulSoftArgmax(XS_TAIL))):
        path = convert_module(tail, x.shape, "mlprogram", tmp_path / name, "fp16")
        for mode in ("op", "fp16"):
            joints = evaluate_coreml(path, x, accumulation=mode)
            moved[name, mode] = float(np.abs(joints[..., :2] - exact[..., :2]).max()) * to_input
    log.info("2-D joint error, input px: %s", moved)
    assert moved["new", "op"] < 0.5 and moved["old", "op"] < 0.5
    assert moved["new", "fp16"] < 1.0
    assert moved["old", "fp16"] > 5.0
