"""Tiny .tflite files whose answers are known: the set-up's self-check and the GPU tests feed them to the
accelerator. Written with TensorFlow's converter (a tf.function with the contract's names: signature
``serving_default``, input ``image``, output ``joints``), so they are what our real files are made of:
TFLite builtin ops, float32 tensors. Each is a few hundred bytes and converts in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.quiet import hushed, import_quietly, native_stderr_hidden
from models.contract import INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True)
class Probe:
    """A model ``(1, *shape) -> (1, *shape)`` given by a TensorFlow function and the same function in numpy."""

    name: str
    shape: tuple[int, ...]
    tf_fn: Callable  # tf.Tensor -> tf.Tensor
    numpy_fn: Callable[[np.ndarray], np.ndarray]  # the exact answer, in float64

    def expected(self, x: np.ndarray) -> np.ndarray:
        return self.numpy_fn(np.asarray(x, np.float64)).astype(np.float32)

    def write(self, path: Path) -> Path:
        """The probe as a .tflite file at ``path`` (written once; a later call keeps the file)."""
        path = Path(path)
        if path.is_file():
            return path
        import_quietly("tensorflow")
        import tensorflow as tf

        module = tf.Module()
        module.serve = tf.function(lambda image: {OUTPUT_NAME: self.tf_fn(image)},
                                   input_signature=[tf.TensorSpec((1, *self.shape), tf.float32, name=INPUT_NAME)])
        with native_stderr_hidden(), hushed():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()],
                                                                        module)
            flatbuffer = converter.convert()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(flatbuffer)
        partial.rename(path)
        return path


#: Two ops (MUL, ADD) whose answer is exact in fp16 too, for the inputs :func:`affine_inputs` makes.
AFFINE = Probe("affine", (6, 3), lambda x: x * 2.0 + 1.0, lambda x: x * 2.0 + 1.0)
#: (x + 1) - 1: x to within 2**-24 in float32 arithmetic, but 0 in fp16 for |x| < 2**-11 (1 + x rounds back
#: to 1: fp16 keeps 10 fraction bits). The GPU accelerator's default (fp16) and enforce_f32
#: options must give different answers here.
CANCELLATION = Probe("cancellation", (6, 3), lambda x: (x + 1.0) - 1.0, lambda x: x)


def affine_inputs(n: int = 2) -> np.ndarray:
    """Small multiples of 1/4: every value, and 2x + 1, exact in fp16."""
    return (np.arange(n * 18, dtype=np.float32).reshape(n, 6, 3) - 9 * n) / 4


def cancellation_inputs(n: int = 2) -> np.ndarray:
    """Values between 1e-4 and 2e-4: fp16 normals, below half of fp16's 2**-10 spacing at 1."""
    return np.linspace(1e-4, 2e-4, n * 18, dtype=np.float32).reshape(n, 6, 3)
