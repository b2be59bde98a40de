"""ML Program (.mlpackage) reader: the MIL program in spec.mlProgram, weights from the package's blob file.

Every tensor is stored in the dtype the program declares for it, so an fp16 program is evaluated
with fp16 weights and fp16 activations between ops (arithmetic inside an op is fp32; see __init__).
A reader of an op that sums also gives its kernel for the fp16-accumulation mode (``MilOp.fp16_kernel``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import ExportError
from runtimes.coreml_reference import fp16_accumulation as fp16
from runtimes.coreml_reference import kernels
from runtimes.coreml_reference.graph import Graph, Kernel, Node, UnsupportedOpError, image_input

MODEL_PATH_PREFIX = "@model_path/"

# MIL DataType enum values (coremltools.proto.MIL_pb2.DataType); written out so importing this
# module does not import coremltools.
_FLOAT16, _FLOAT32, _FLOAT64 = 10, 11, 12
_NUMPY_DTYPES = {1: np.bool_, 10: np.float16, 11: np.float32, 12: np.float64, 21: np.int8, 22: np.int16,
                 23: np.int32, 24: np.int64, 31: np.uint8, 32: np.uint16, 33: np.uint32, 34: np.uint64}
_TORCH_DTYPES = {1: torch.bool, 10: torch.float16, 11: torch.float32, 12: torch.float64, 21: torch.int8,
                 22: torch.int16, 23: torch.int32, 24: torch.int64, 31: torch.uint8}
_CAST_DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "int16": torch.int16,
                "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


class _Blobs:
    """Reads blobFileValue weights with coremltools' own blob-storage reader."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._readers: dict[Path, Any] = {}

    def read(self, blob: Any, data_type: int, name: str) -> np.ndarray:
        from coremltools.libmilstoragepython import _BlobStorageReader

        if not blob.fileName.startswith(MODEL_PATH_PREFIX):
            raise ExportError(f"const {name!r}: weight file {blob.fileName!r} is not inside the package")
        path = self.model_dir / blob.fileName[len(MODEL_PATH_PREFIX):]
        if path not in self._readers:
            if not path.is_file():
                raise ExportError(f"const {name!r}: weight file {path} does not exist")
            self._readers[path] = _BlobStorageReader(str(path))
        reader = self._readers[path]
        if data_type == _FLOAT16:  # the reader hands fp16 back as raw uint16
            return np.asarray(reader.read_fp16_data(blob.offset)).view(np.float16)
        readers = {_FLOAT32: "read_float_data", 21: "read_int8_data", 31: "read_uint8_data",
                   22: "read_int16_data", 32: "read_uint16_data", 23: "read_int32_data", 33: "read_uint32_data"}
        if data_type not in readers:
            raise UnsupportedOpError("const", name, f"blob weights of MIL data type {data_type}")
        return np.asarray(getattr(reader, readers[data_type])(blob.offset))


def _value(value: Any, blobs: _Blobs, name: str) -> Any:
    """A MIL Value as a torch tensor (numeric) or a str / list of str."""
    if value.type.WhichOneof("type") != "tensorType":
        raise UnsupportedOpError("const", name, f"value of type {value.type.WhichOneof('type')}")
    tensor_type = value.type.tensorType
    dtype = tensor_type.dataType
    shape = [d.constant.size for d in tensor_type.dimensions]
    if value.WhichOneof("value") == "blobFileValue":
        array = blobs.read(value.blobFileValue, dtype, name)
    else:
        tensor = value.immediateValue.tensor
        kind = tensor.WhichOneof("value")
        if kind == "strings":
            strings = [str(s) for s in tensor.strings.values]
            return strings[0] if not shape else strings
        if dtype not in _NUMPY_DTYPES:
            raise UnsupportedOpError("const", name, f"MIL data type {dtype}")
        if kind == "bytes":
            array = np.frombuffer(tensor.bytes.values, dtype=_NUMPY_DTYPES[dtype])
        elif kind in ("floats", "ints", "bools", "longInts", "doubles"):
            array = np.asarray(getattr(tensor, kind).values)
        else:
            raise UnsupportedOpError("const", name, f"immediate value kind {kind}")
    if dtype not in _NUMPY_DTYPES:
        raise UnsupportedOpError("const", name, f"MIL data type {dtype}")
    array = array.astype(_NUMPY_DTYPES[dtype], copy=False)
    if array.size != int(np.prod(shape)):
        raise ExportError(f"const {name!r}: {array.size} values stored for declared shape {shape}")
    return torch.from_numpy(array.reshape(shape).copy())


class MilOp:
    """One MIL op while it is being read: const parameters by name, runtime inputs in call order."""

    def __init__(self, op: Any, consts: dict[str, Any], blobs: _Blobs) -> None:
        self.type = op.type
        self.name = _op_name(op)
        self._args: dict[str, list[str]] = {}
        self._consts = consts
        self.consulted: set[str] = set()  # input keys the reader looked at; any other key is refused
        for key, binding in op.inputs.items():
            names = []
            for i, arg in enumerate(binding.arguments):
                if arg.WhichOneof("binding") == "value":  # an inline value: treat it as an anonymous const
                    inline = f"{self.name}/{key}/{i}"
                    consts[inline] = _value(arg.value, blobs, inline)
                    names.append(inline)
                else:
                    names.append(arg.name)
            self._args[key] = names
        self.runtime: list[str] = []
        # The kernel of the fp16-accumulation mode, set by readers of ops that sum (same runtime inputs).
        self.fp16_kernel: Kernel | None = None
        # Declared static output shapes (None where symbolic): the converter's own shape inference.
        self.out_shapes = [
            tuple(d.constant.size for d in o.type.tensorType.dimensions)
            if all(d.WhichOneof("dimension") == "constant" for d in o.type.tensorType.dimensions) else None
            for o in op.outputs
        ]

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.type, self.name, detail)

    def param(self, key: str, default: Any = None) -> Any:
        """A parameter Core ML requires to be const, as a Python value."""
        self.consulted.add(key)
        if key not in self._args:
            return default
        (name,) = self._args[key]
        if name not in self._consts:
            raise self.unsupported(f"parameter {key!r} is computed at run time")
        value = self._consts[name]
        if torch.is_tensor(value):
            return value.item() if value.dim() == 0 else value.tolist()
        return value

    def has(self, key: str) -> bool:
        self.consulted.add(key)
        return key in self._args

    def tensor(self, key: str) -> None:
        """Make input `key` the next positional argument of the kernel."""
        self.consulted.add(key)
        if key not in self._args:
            raise ExportError(f"op {self.type!r} ({self.name!r}) lacks its input {key!r}")
        self.runtime += self._args[key]

    def tensors(self, key: str) -> None:
        """Make every argument of the variadic input `key` the next positional arguments."""
        self.tensor(key)


def _op_name(op: Any) -> str:
    if "name" in op.attributes:
        return str(op.attributes["name"].immediateValue.tensor.strings.values[0])
    return op.outputs[0].name if op.outputs else op.type


# ---- op readers: each reads parameters and returns the kernel over the runtime inputs ------------
MIL_OPS: dict[str, Callable[[MilOp], Kernel]] = {}


def _reads(*op_types: str) -> Callable[[Callable[[MilOp], Kernel]], Callable[[MilOp], Kernel]]:
    def register(reader: Callable[[MilOp], Kernel]) -> Callable[[MilOp], Kernel]:
        for op_type in op_types:
            MIL_OPS[op_type] = reader
        return reader
    return register


@_reads("conv")
def _conv(op: MilOp) -> Kernel:
    strides = tuple(op.param("strides", [1, 1]))
    dilations = tuple(op.param("dilations", [1, 1]))
    groups = int(op.param("groups", 1))
    pad_type = op.param("pad_type", "valid")
    pad = tuple(op.param("pad", [0, 0, 0, 0]))
    if len(strides) != 2:
        raise op.unsupported(f"{len(strides)}-D convolution (only 2-D)")
    if pad_type not in ("valid", "custom", "same", "same_lower"):
        raise op.unsupported(f"pad_type {pad_type!r}")
    op.tensor("x")
    op.tensor("weight")
    has_bias = op.has("bias")
    if has_bias:
        op.tensor("bias")

    def pads_for(x: torch.Tensor, weight: torch.Tensor) -> kernels.Pads:
        if pad_type == "custom":
            return pad
        if pad_type == "valid":
            return (0, 0, 0, 0)
        return kernels.same_pads(tuple(x.shape[-2:]), tuple(weight.shape[-2:]), strides, dilations,
                                 top_left_heavy=pad_type == "same_lower")

    def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return kernels.conv2d(x, weight, bias, strides, pads_for(x, weight), dilations, groups)

    op.fp16_kernel = lambda x, weight, bias=None: fp16.conv2d(x, weight, bias, strides, pads_for(x, weight),
                                                              dilations, groups)
    return conv


@_reads("batch_norm")
def _batch_norm(op: MilOp) -> Kernel:
    epsilon = float(op.param("epsilon", 1e-5))
    for key in ("x", "mean", "variance"):
        op.tensor(key)
    has_gamma, has_beta = op.has("gamma"), op.has("beta")
    if has_gamma:
        op.tensor("gamma")
    if has_beta:
        op.tensor("beta")

    def gamma_beta(affine: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return affine[0] if has_gamma else None, affine[-1] if has_beta else None

    def batch_norm(x, mean, variance, *affine):
        return kernels.batch_norm(x, mean, variance, *gamma_beta(affine), epsilon, channel_axis=1)

    op.fp16_kernel = lambda x, mean, variance, *affine: fp16.batch_norm(x, mean, variance, *gamma_beta(affine),
                                                                         epsilon, channel_axis=1)
    return batch_norm


@_reads("relu", "sigmoid", "tanh", "exp")
def _unary(op: MilOp) -> Kernel:
    op.tensor("x")
    return {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp}[op.type]


@_reads("add", "sub", "mul", "real_div")
def _binary(op: MilOp) -> Kernel:
    op.tensor("x")
    op.tensor("y")
    return {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.div}[op.type]


@_reads("upsample_bilinear")
def _upsample_bilinear(op: MilOp) -> Kernel:
    scale_h = float(op.param("scale_factor_height", 1))
    scale_w = float(op.param("scale_factor_width", 1))
    align_corners = bool(op.param("align_corners", True))
    half_pixel = bool(op.param("half_pixel_centers", not align_corners))  # iOS16+; defaults to !align_corners
    if align_corners and half_pixel:
        raise op.unsupported("align_corners and half_pixel_centers both true")
    mode = "align_corners" if align_corners else "half_pixel" if half_pixel else "default"
    op.tensor("x")
    declared = op.out_shapes[0]

    def out_size(x: torch.Tensor) -> tuple[int, int]:
        # Output size is floor(in * scale) (MIL docs); the declared shape settles float rounding
        # (6 * float32(7/6) floors to 6). The grid is then recomputed from the two sizes.
        if declared:
            return declared[-2], declared[-1]
        return math.floor(x.shape[-2] * scale_h), math.floor(x.shape[-1] * scale_w)

    op.fp16_kernel = lambda x: fp16.resize_bilinear(x, *out_size(x), mode)
    return lambda x: kernels.resize_bilinear(x, *out_size(x), mode)


_SAMPLING_MODES = {"STRICT_ALIGN_CORNERS": "align_corners", "ALIGN_CORNERS": "align_corners_centred",
                   "DEFAULT": "default", "OFFSET_CORNERS": "offset_corners", "UNALIGN_CORNERS": "half_pixel"}


@_reads("resize_bilinear")
def _resize_bilinear(op: MilOp) -> Kernel:
    out_h = int(op.param("target_size_height", 1))
    out_w = int(op.param("target_size_width", 1))
    sampling = op.param("sampling_mode", "DEFAULT")
    if sampling not in _SAMPLING_MODES:
        raise op.unsupported(f"sampling_mode {sampling!r}")
    op.tensor("x")
    op.fp16_kernel = lambda x: fp16.resize_bilinear(x, out_h, out_w, _SAMPLING_MODES[sampling])
    return lambda x: kernels.resize_bilinear(x, out_h, out_w, _SAMPLING_MODES[sampling])


@_reads("reshape")
def _reshape(op: MilOp) -> Kernel:
    shape = [int(s) for s in op.param("shape")]
    op.tensor("x")
    return lambda x: kernels.reshape(x, shape)


@_reads("transpose")
def _transpose(op: MilOp) -> Kernel:
    perm = [int(p) for p in op.param("perm")]
    op.tensor("x")
    return lambda x: x.permute(perm)


@_reads("expand_dims")
def _expand_dims(op: MilOp) -> Kernel:
    axes = [int(a) for a in op.param("axes")]
    op.tensor("x")

    def expand_dims(x: torch.Tensor) -> torch.Tensor:
        rank = x.dim() + len(axes)
        for axis in sorted(a % rank for a in axes):  # MIL axes index the output
            x = x.unsqueeze(axis)
        return x

    return expand_dims


@_reads("squeeze")
def _squeeze(op: MilOp) -> Kernel:
    axes = op.param("axes")
    op.tensor("x")
    return lambda x: x.squeeze() if axes is None else x.squeeze(tuple(int(a) for a in axes))


@_reads("softmax")
def _softmax(op: MilOp) -> Kernel:
    axis = int(op.param("axis", -1))
    op.tensor("x")
    op.fp16_kernel = lambda x: fp16.softmax(x, axis)
    return lambda x: torch.softmax(x, dim=axis)


@_reads("matmul")
def _matmul(op: MilOp) -> Kernel:
    transpose_x = bool(op.param("transpose_x", False))
    transpose_y = bool(op.param("transpose_y", False))
    op.tensor("x")
    op.tensor("y")
    op.fp16_kernel = lambda x, y: fp16.matmul(x, y, transpose_x, transpose_y)
    return lambda x, y: kernels.matmul(x, y, transpose_x, transpose_y)


@_reads("linear")
def _linear(op: MilOp) -> Kernel:
    op.tensor("x")
    op.tensor("weight")  # (out, in), as torch.nn.Linear
    if op.has("bias"):
        op.tensor("bias")
    op.fp16_kernel = fp16.linear
    return lambda x, weight, bias=None: torch.nn.functional.linear(x, weight, bias)


@_reads("reduce_sum", "reduce_mean", "reduce_max")
def _reduce(op: MilOp) -> Kernel:
    axes = op.param("axes")
    keep_dims = bool(op.param("keep_dims", False))
    kind = op.type.removeprefix("reduce_")
    op.tensor("x")
    op.fp16_kernel = lambda x: fp16.reduce(x, kind, axes, keep_dims)
    return lambda x: kernels.reduce(x, kind, axes, keep_dims)


@_reads("concat")
def _concat(op: MilOp) -> Kernel:
    axis = int(op.param("axis"))
    if op.param("interleave", False):
        raise op.unsupported("interleave=True")
    op.tensors("values")
    return lambda *values: torch.cat(values, dim=axis)


@_reads("cast")
def _cast(op: MilOp) -> Kernel:
    dtype = op.param("dtype")
    if dtype not in _CAST_DTYPES:
        raise op.unsupported(f"cast to {dtype!r}")
    op.tensor("x")
    return lambda x: x.to(_CAST_DTYPES[dtype])


# ---- compile-time ops: compressed weights, decompressed to constants while the model is read ---
# iOS 16 (opset CoreML6) form: every parameter is a const attribute of the op, not an input. The
# iOS 18 ops with the same job take their parameters as inputs with other shapes and sub-byte types
# (constexpr_blockwise_shift_scale, and constexpr_lut_to_dense with an n-D LUT); those are refused.
CONSTEXPR_OPS: dict[str, Callable[..., torch.Tensor]] = {}
_CONSTEXPR_PARAMS = {"constexpr_affine_dequantize": ("quantized_data", "zero_point", "scale", "axis"),
                     "constexpr_lut_to_dense": ("indices", "lut", "shape")}
_LUT_SIZES = (2, 4, 16, 64, 256)  # 1, 2, 4, 6 or 8-bit indices (iOS 16)


def _decompresses(op_type: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    def register(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        CONSTEXPR_OPS[op_type] = fn
        return fn
    return register


@_decompresses("constexpr_affine_dequantize")
def affine_dequantize(quantized_data: torch.Tensor, zero_point: torch.Tensor, scale: torch.Tensor,
                      axis: int) -> torch.Tensor:
    """scale * (quantized_data - zero_point), scale / zero_point scalars or vectors along ``axis``.

    Computed in fp32 (int8/uint8 data and zero points are exact there) and returned in the dtype of
    ``scale``, the op's output dtype (fp16 for an fp16 program), as coremltools' own decompression does.
    """
    if quantized_data.dtype not in (torch.int8, torch.uint8):
        raise ExportError(f"quantized_data of dtype {quantized_data.dtype} (int8 or uint8 only)")
    rank = quantized_data.dim()
    if not -rank <= axis < rank:
        raise ExportError(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    shape = [1] * rank
    shape[axis] = quantized_data.shape[axis]

    def along_axis(param: torch.Tensor, name: str) -> torch.Tensor:
        if param.dim() == 0:
            return param.float()
        if param.dim() != 1 or param.numel() != quantized_data.shape[axis]:
            raise ExportError(f"{name} of shape {list(param.shape)} for quantized_data {list(quantized_data.shape)} "
                              f"along axis {axis} (a scalar or a vector of {quantized_data.shape[axis]})")
        return param.float().reshape(shape)

    dequantized = (quantized_data.float() - along_axis(zero_point, "zero_point")) * along_axis(scale, "scale")
    return dequantized.to(scale.dtype)


def unpack_indices(packed: torch.Tensor, nbits: int, count: int) -> torch.Tensor:
    """``count`` nbits-wide unsigned integers from a byte vector, packed from each byte's LSB upwards.

    An index split across two bytes has its low bits in the high bits of the first byte and its
    remaining bits in the low bits of the next (MIL constexpr_lut_to_dense).
    """
    bits = torch.from_numpy(np.unpackbits(packed.numpy().astype(np.uint8), bitorder="little"))
    bits = bits[: count * nbits].reshape(count, nbits).long()
    return (bits << torch.arange(nbits)).sum(dim=1)


@_decompresses("constexpr_lut_to_dense")
def lut_to_dense(indices: torch.Tensor, lut: torch.Tensor, shape: list[int] | int) -> torch.Tensor:
    """lut[index] for every packed index, reshaped to ``shape`` (row-major)."""
    shape = [shape] if isinstance(shape, int) else [int(s) for s in shape]
    if indices.dtype != torch.uint8 or indices.dim() != 1:
        raise ExportError(f"indices must be a uint8 vector, got {indices.dtype} of shape {list(indices.shape)}")
    if lut.dim() != 1 or lut.numel() not in _LUT_SIZES:
        raise ExportError(f"lut of shape {list(lut.shape)} (a vector of {_LUT_SIZES} entries)")
    nbits = lut.numel().bit_length() - 1
    count = math.prod(shape)
    if indices.numel() != math.ceil(nbits * count / 8):
        raise ExportError(f"{indices.numel()} index bytes for {count} {nbits}-bit indices "
                          f"(needs {math.ceil(nbits * count / 8)})")
    return lut[unpack_indices(indices, nbits, count)].reshape(shape)


def _read_constexpr(proto_op: Any, blobs: _Blobs) -> torch.Tensor:
    """The constant a compile-time op produces, in its declared dtype and shape."""
    name = _op_name(proto_op)
    if len(proto_op.inputs):
        raise UnsupportedOpError(proto_op.type, name, f"parameters passed as inputs {sorted(proto_op.inputs)} "
                                 "(the iOS 18 form of this op); only the iOS 16 attribute form is implemented")
    expected = _CONSTEXPR_PARAMS[proto_op.type]
    given = set(proto_op.attributes) - {"name"}
    if given != set(expected):
        raise UnsupportedOpError(proto_op.type, name, f"parameters {sorted(given)}, expected {sorted(expected)}")
    params = {}
    for key in expected:
        value = _value(proto_op.attributes[key], blobs, f"{name}/{key}")
        params[key] = value.item() if key == "axis" else value.tolist() if key == "shape" else value
    try:
        result = CONSTEXPR_OPS[proto_op.type](**params)
    except ExportError as exc:
        raise ExportError(f"Core ML reference evaluator: {proto_op.type} {name!r}: {exc}") from exc
    (out,) = proto_op.outputs
    declared_dtype = _TORCH_DTYPES.get(out.type.tensorType.dataType)
    declared_shape = [d.constant.size for d in out.type.tensorType.dimensions]
    if result.dtype != declared_dtype or list(result.shape) != declared_shape:
        raise ExportError(f"Core ML reference evaluator: {proto_op.type} {name!r} gives {result.dtype} "
                          f"{list(result.shape)}, the model declares {declared_dtype} {declared_shape}")
    return result


# ---- the program -------------------------------------------------------------------------------
def _main_block(spec: Any, function: str) -> tuple[Any, Any]:
    program = spec.mlProgram
    if function not in program.functions:
        raise ExportError(f"ML Program has no function {function!r} (has {sorted(program.functions)})")
    func = program.functions[function]
    return func, func.block_specializations[func.opset]


def program_precision(spec: Any, function: str = "main") -> str:
    """"fp16" when any computing op (not const, not cast) produces an fp16 tensor, else "fp32".

    Core ML's compute_precision=FLOAT16 shows up exactly so: casts to fp16 after the inputs, fp16
    weights, and fp16 outputs for every op in between.
    """
    _, block = _main_block(spec, function)
    for op in block.operations:
        if op.type not in ("const", "cast") and any(
            o.type.WhichOneof("type") == "tensorType" and o.type.tensorType.dataType == _FLOAT16 for o in op.outputs
        ):
            return "fp16"
    return "fp32"


def read_ml_program(spec: Any, model_dir: Path, function: str = "main") -> Graph:
    func, block = _main_block(spec, function)
    blobs = _Blobs(model_dir)
    consts: dict[str, Any] = {}
    decompressed: Counter[str] = Counter()
    nodes: list[Node] = []
    for proto_op in block.operations:
        if proto_op.type == "const":
            out = proto_op.outputs[0].name
            consts[out] = _value(proto_op.attributes["val"], blobs, out)
            continue
        if proto_op.type in CONSTEXPR_OPS:
            consts[proto_op.outputs[0].name] = _read_constexpr(proto_op, blobs)
            decompressed[proto_op.type] += 1
            continue
        op = MilOp(proto_op, consts, blobs)
        reader = MIL_OPS.get(proto_op.type)
        if reader is None:
            raise UnsupportedOpError(proto_op.type, op.name)
        if len(proto_op.blocks):
            raise op.unsupported("nested blocks (control flow)")
        kernel = reader(op)
        ignored = set(proto_op.inputs) - op.consulted
        if ignored:  # e.g. an input a newer opset added: its meaning is unknown here, so refuse
            raise op.unsupported(f"input(s) {sorted(ignored)} not understood")
        out_types = [o.type.tensorType.dataType if o.type.WhichOneof("type") == "tensorType" else None
                     for o in proto_op.outputs]
        nodes.append(Node(proto_op.type, op.name, tuple(op.runtime), tuple(o.name for o in proto_op.outputs),
                          kernel, tuple(_TORCH_DTYPES.get(t) for t in out_types), op.fp16_kernel))

    input_types = {i.name: i.type.tensorType.dataType for i in func.inputs}
    input_name = spec.description.input[0].name
    output_name = spec.description.output[0].name
    if input_name not in input_types or output_name not in block.outputs:
        raise ExportError(f"ML Program function {function!r} does not take {input_name!r} / give {output_name!r}")
    return Graph(
        format="mlprogram",
        precision=program_precision(spec, function),
        input_name=input_name,
        input_dtype=_TORCH_DTYPES[input_types[input_name]],
        output_name=output_name,
        nodes=nodes,
        constants=consts,
        decompressed=dict(sorted(decompressed.items())),
        # an ML Program's image scale and bias are ops at the start of the graph: only the channel order here
        image_input=image_input(spec.description.input[0]),
    )
