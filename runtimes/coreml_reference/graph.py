"""The executable form both Core ML formats are read into: constants plus a topologically ordered list of nodes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.errors import ExportError

log = logging.getLogger(__name__)

Kernel = Callable[..., Any]  # takes the node's runtime inputs, returns a tensor or a tuple of tensors


class UnsupportedOpError(ExportError):
    """The model holds an op (or an op variant) this evaluator has no kernel for.

    Raised while reading the model, before anything runs: a graph we cannot fully execute must not
    produce numbers that look like a verification result.
    """

    def __init__(self, op_type: str, op_name: str, detail: str = "") -> None:
        self.op_type = op_type
        self.op_name = op_name
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"Core ML reference evaluator: op type {op_type!r} (op {op_name!r}) is not supported{why}; "
            "add a kernel for it in exporters/coreml_reference before trusting this model"
        )


@dataclass(frozen=True)
class Node:
    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kernel: Kernel
    # Storage dtype of each output (None: keep what the kernel returned). Rounding every fp16
    # output here is what makes an fp16 ML Program show its fp16 error.
    out_dtypes: tuple[torch.dtype | None, ...]
    # The op's kernel for the fp16-accumulation mode (fp16 inputs, every sum accumulated in fp16 one term
    # at a time: fp16_accumulation.py); None for ops that do not sum, whose fp16 result is the default's.
    fp16_kernel: Kernel | None = None


#: How an op sums: "op" (default: in fp32 inside the op, its result stored in the declared dtype) or "fp16"
#: (an fp16 op's every sum accumulated in fp16 one term at a time; the worst a GPU or Neural Engine can do).
ACCUMULATIONS = ("op", "fp16")

#: ImageFeatureType.ColorSpace of the Core ML spec -> name (written out: no coremltools import).
COLOR_SPACES = {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}


@dataclass(frozen=True)
class ImageInput:
    """A Core ML image input. The app hands Core ML a picture; Core ML gives the model its pixel values
    (0..255) in the colour order the model declares, then applies the NeuralNetwork ``preprocessing``
    scaler (an ML Program carries its scale and bias as ops at the start of the graph instead)."""

    color_space: str  # RGB | BGR
    width: int
    height: int
    scale: float = 1.0
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, in the declared order

    def model_input(self, rgb255: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) RGB pixel values -> what the model's first op receives."""
        if rgb255.shape[-2:] != (self.height, self.width):
            raise ExportError(f"the model's image input is {self.width}x{self.height}, got {rgb255.shape}")
        pixels = rgb255[:, ::-1] if self.color_space == "BGR" else rgb255
        bias = np.asarray(self.bias, dtype=np.float32).reshape(1, 3, 1, 1)
        return (pixels.astype(np.float32) * np.float32(self.scale) + bias).astype(np.float32)


@dataclass
class Graph:
    """One Core ML model, read and ready to run on one input at a time."""

    format: str  # "mlprogram" or "neuralnetwork"
    precision: str  # "fp16" or "fp32": the storage precision of the computed tensors
    input_name: str
    input_dtype: torch.dtype
    output_name: str
    nodes: list[Node]
    constants: dict[str, Any] = field(default_factory=dict)
    # Compile-time ops (compressed weights) decompressed into `constants` while reading: type -> count.
    decompressed: dict[str, int] = field(default_factory=dict)
    image_input: ImageInput | None = None  # set when the model takes a picture (ct.ImageType)
    half_constants: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # The fp16 constants as stored, for the fp16-accumulation mode (fp16 tensors in, fp16 sums).
        self.half_constants = {name: value for name, value in self.constants.items()
                               if torch.is_tensor(value) and value.dtype == torch.float16}
        # fp16 constants widen to fp32 exactly; doing it once here saves converting the weights per image.
        self.constants = {name: _widen(value) for name, value in self.constants.items()}

    @property
    def op_types(self) -> list[str]:
        return sorted({n.op_type for n in self.nodes})

    def run_image(self, rgb255: np.ndarray, keep: dict[str, np.ndarray] | None = None,
                  accumulation: str = "op") -> np.ndarray:
        """An image-input model on (1, 3, H, W) RGB pixel values 0..255, as Core ML would feed it."""
        if self.image_input is None:
            raise ExportError("this Core ML model takes a tensor, not an image")
        return self.run(self.image_input.model_input(rgb255), keep, accumulation)

    def check_accumulation(self, accumulation: str) -> None:
        """Refuse a mode this graph cannot be run in: "fp16" is about fp16 programs only (an fp32 one has no
        fp16 sums to make worse, and answering for it would pass its fp32 figures off as fp16's)."""
        if accumulation not in ACCUMULATIONS:
            raise ValueError(f"unknown accumulation {accumulation!r}; known: {', '.join(ACCUMULATIONS)}")
        if accumulation == "fp16" and self.precision != "fp16":
            raise ExportError(f"fp16 accumulation applies to fp16 ML Programs; this {self.format} model computes "
                              f"in {self.precision}")

    def run(self, x: np.ndarray, keep: dict[str, np.ndarray] | None = None, accumulation: str = "op") -> np.ndarray:
        """The model on what its first op receives (for an image input: see ``run_image``). ``keep``: filled
        with every tensor an op produced, by name, in execution order. ``accumulation``: one of ACCUMULATIONS."""
        self.check_accumulation(accumulation)
        fp16_sums = accumulation == "fp16"
        env: dict[str, Any] = {**self.constants, **self.half_constants} if fp16_sums else dict(self.constants)
        env[self.input_name] = torch.from_numpy(np.ascontiguousarray(x)).to(self.input_dtype)
        with torch.no_grad():
            for node in self.nodes:
                if fp16_sums and node.fp16_kernel is not None and node.out_dtypes[0] == torch.float16:
                    kernel, args = node.fp16_kernel, [env[name] for name in node.inputs]  # fp16 in, fp16 sums
                else:  # arithmetic in fp32 on the stored (possibly fp16) values; see Node.out_dtypes
                    kernel, args = node.kernel, [_widen(env[name]) for name in node.inputs]
                try:
                    result = kernel(*args)
                except Exception as exc:  # name the op: a bare torch shape error says nothing about the model
                    raise ExportError(f"Core ML reference evaluator: op {node.op_type!r} ({node.name!r}) "
                                      f"failed: {exc}") from exc
                results = result if isinstance(result, tuple) else (result,)
                if len(results) != len(node.outputs):
                    raise ExportError(f"op {node.op_type!r} ({node.name!r}) gave {len(results)} outputs, "
                                      f"the model declares {len(node.outputs)}")
                for name, value, dtype in zip(node.outputs, results, node.out_dtypes):
                    env[name] = value.to(dtype) if dtype is not None and torch.is_tensor(value) else value
                    if keep is not None and torch.is_tensor(env[name]) and env[name].is_floating_point():
                        keep[name] = env[name].float().numpy()
        return env[self.output_name].float().numpy()


def _widen(value: Any) -> Any:
    if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    return value


def image_input(feature: Any, scale: float = 1.0,
                bias: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> ImageInput | None:
    """The model's image input, or None when it takes a tensor."""
    if feature.type.WhichOneof("Type") != "imageType":
        return None
    image = feature.type.imageType
    color_space = COLOR_SPACES.get(image.colorSpace)
    if color_space not in ("RGB", "BGR"):
        raise UnsupportedOpError("imageType", feature.name, f"colour space {color_space or image.colorSpace}")
    return ImageInput(color_space, image.width, image.height, scale, bias)
