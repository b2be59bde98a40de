"""ONNX -> TFLite through onnx2tf's Keras model, with a `serving_default` signature and builtin ops only.

onnx2tf converts NCHW ONNX to an NHWC TensorFlow graph. Its own .tflite files carry no signature,
so we take its in-memory Keras model (it writes nothing), convert it with the TF Lite converter at
each precision and sign the flatbuffer `image` -> `joints`. onnx2tf reads a calibration sample from
the working directory (and downloads one if it is missing), so conversion runs in a folder where we
wrote our own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from common.errors import ExportError
from common.quiet import hushed
from models.contract import INPUT_NAME, OUTPUT_NAME
from runtimes.litert import SIGNATURE_KEY, op_names

log = logging.getLogger(__name__)

# onnx2tf looks for exactly this file in the working directory before downloading it.
ONNX2TF_CALIBRATION_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_CALIBRATION_SHAPE = (20, 128, 128, 3)
METADATA_NAME = "convnextpose_metadata"
PRECISIONS = ("fp32", "fp16")


def calibration_sample(images_nchw: np.ndarray) -> np.ndarray:
    """onnx2tf's sample file from our own photos: 20 x 128 x 128 x 3 float32 in [0, 1], no download."""
    import tensorflow as tf

    n = _CALIBRATION_SHAPE[0]
    nhwc = images_nchw.transpose(0, 2, 3, 1)
    both = np.concatenate([nhwc, nhwc[:, :, ::-1]])  # horizontal flips double the variety
    picked = both[np.arange(n) % len(both)]
    return tf.image.resize(picked, _CALIBRATION_SHAPE[1:3]).numpy().astype(np.float32)


@contextlib.contextmanager
def _working_directory(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def onnx_to_keras(onnx_path: Path, work_dir: Path, calibration_images: np.ndarray):
    """Run onnx2tf; returns its Keras model (NHWC input), nothing written: onnx2tf's own SavedModel and
    its two .tflite files (5-8 s of a 12 s stage for S, measured) are not what we ship."""
    import onnx2tf
    import tf_keras

    # Keras numbers its layers and models per process ("model_4/tf.math.add_119/Add"), and those names become
    # the .tflite's tensor names: without a fresh session a second conversion in one process (a test, a
    # notebook) wrote different bytes for the same model
    tf_keras.backend.clear_session()
    work_dir = work_dir.resolve()  # resolved before chdir
    work_dir.mkdir(parents=True, exist_ok=True)
    # onnx2tf rewrites its input file in place (it re-simplifies it): give it a private copy.
    private = work_dir / "onnx2tf_input.onnx"
    shutil.copyfile(onnx_path, private)
    np.save(work_dir / ONNX2TF_CALIBRATION_FILE, calibration_sample(calibration_images))
    try:
        with _working_directory(work_dir), hushed() as captured:
            model = onnx2tf.convert(
                input_onnx_file_path=str(private),
                output_signaturedefs=True,  # SavedModel-safe layer names
                batch_size=1,  # fixes a dynamic batch axis; phones run one crop at a time
                disable_model_save=True,
                non_verbose=True,
            )
    except Exception as exc:  # not KeyboardInterrupt: Ctrl-C stops the export, it is not a converter failure
        tail = "\n".join(captured.getvalue().strip().splitlines()[-15:])
        raise ExportError(f"onnx2tf failed on {onnx_path.name}: {exc}\n{tail}") from None
    (work_dir / "onnx2tf.log").write_text(captured.getvalue())
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"onnx2tf made a model with {len(model.inputs)} inputs and {len(model.outputs)} outputs "
                          f"from {onnx_path.name}; one image in, one tensor out expected")
    return model


def keras_to_tflite(model, precision: str) -> bytes:
    """The Keras model as a signed .tflite at ``precision``: builtin ops only (the converter fails rather
    than emit Flex / SELECT_TF_OPS ops)."""
    import tensorflow as tf

    (spec,) = model.inputs
    signature = [tf.TensorSpec(spec.shape, tf.float32, name=INPUT_NAME)]
    function = tf.function(lambda image: model(image), input_signature=signature)
    return canonical_tensor_names(function_to_tflite(function.get_concrete_function(), precision))


_KERAS_NAME = re.compile(r"^(tf\.[A-Za-z0-9_.]*?[A-Za-z])(?:_(\d+))?$")


def canonical_tensor_names(tflite: bytes) -> bytes:
    """The flatbuffer with Keras' per-process counters taken out of its tensor names: "model_40/tf.math.add_118/Add"
    becomes "model/tf.math.add_k/Add", k numbering that layer kind in order of first appearance. onnx2tf builds
    trial models while it converts, as many as its numeric checks ask for, and on this AVX-512 machine an XS
    conversion built two more than under AVX2: the same graph came out with other names, so other bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    numbers: dict[str, dict[str, int]] = {}

    def canonical(component: str) -> str:
        if re.fullmatch(r"model(_\d+)?", component):
            return "model"
        match = _KERAS_NAME.match(component)
        if not match:
            return component
        seen = numbers.setdefault(match.group(1), {})
        k = seen.setdefault(component, len(seen))
        return f"{match.group(1)}_{k}" if k else match.group(1)

    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode()
            tensor.name = ";".join("/".join(canonical(c) for c in part.split("/")) for part in name.split(";")).encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def function_to_tflite(function, precision: str) -> bytes:
    """A one-input, one-output concrete function as a .tflite with the `serving_default` signature
    `image -> joints`. Converted from the frozen function (1-2 s for S) rather than from a SavedModel
    (which needs one written and read back, ~2.5 s more per file) or from the function with its
    variables (25 s for S, measured); that path gives no signature, so it is added here."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision != "fp32":
        raise ExportError(f"TFLite precision {precision!r} is not one of {PRECISIONS}")
    return _signed(converter.convert())


def _signed(tflite: bytes) -> bytes:
    """The flatbuffer with one SignatureDef, `serving_default`: its single input as `image`, its single
    output as `joints` (what LiteRT's signature runner and ai-edge-quantizer look up)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    (graph,) = model.subgraphs
    (input_index,), (output_index,) = graph.inputs, graph.outputs

    def entry(name: str, index: int):
        tensor_map = schema.TensorMapT()
        tensor_map.name, tensor_map.tensorIndex = name, int(index)
        return tensor_map

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE_KEY, 0
    signature.inputs, signature.outputs = [entry(INPUT_NAME, input_index)], [entry(OUTPUT_NAME, output_index)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


#: The standard ``reduced_precision_support`` metadata: TensorFlow's converter writes "fp16accfp32" for fp16
#: weights (XNNPACK computes in fp32); "fp16accfp16" lets XNNPACK run fp16 inference on ARM cores with FP16
#: arithmetic (ARMv8.2+: Cortex-A55, A76, A710...), about half the instructions (XS on the emulated A76: 164.6 M
#: against 307.8 M per inference). A core without it (Cortex-A53) runs the file in fp32 either way.
REDUCED_PRECISION = "reduced_precision_support"
FP16_ARITHMETIC = "fp16accfp16"


def reduced_precision(tflite: bytes) -> str | None:
    """The file's ``reduced_precision_support`` metadata, if it has one."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    entry = next((m for m in model.metadata or [] if m.name.decode() == REDUCED_PRECISION), None)
    return None if entry is None else bytes(model.buffers[entry.buffer].data).decode()


def with_reduced_precision(tflite: bytes, value: str) -> bytes:
    """The flatbuffer with its ``reduced_precision_support`` metadata set to ``value`` (e.g. FP16_ARITHMETIC)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    data = np.frombuffer(value.encode(), dtype=np.uint8)
    entry = next((m for m in model.metadata or [] if m.name.decode() == REDUCED_PRECISION), None)
    if entry is not None:
        model.buffers[entry.buffer].data = data
    else:
        buffer, entry = schema.BufferT(), schema.MetadataT()
        buffer.data, entry.name, entry.buffer = data, REDUCED_PRECISION.encode(), len(model.buffers)
        model.buffers.append(buffer)
        model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def embed_metadata(tflite: bytes, metadata: dict[str, str]) -> bytes:
    """Add the manifest essentials as a named metadata buffer (JSON) inside the flatbuffer."""
    import json

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def inline_buffers(tflite: bytes) -> bytes:
    """The same model with every constant inside the flatbuffer. ai-edge-quantizer appends its buffers
    after the flatbuffer and points at them by offset; tools that re-serialise the flatbuffer (the
    metadata populator) would drop them."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    moved = 0
    for buffer in model.buffers:
        if buffer.offset > 1 and buffer.size:
            buffer.data = np.frombuffer(tflite, dtype=np.uint8, count=buffer.size, offset=buffer.offset).copy()
            buffer.offset, buffer.size = 0, 0
            moved += 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if moved else tflite


def read_metadata(path: Path) -> dict[str, str]:
    import json

    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        if entry.name.decode() == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    raise KeyError(f"{path}: no {METADATA_NAME} metadata")


def check_builtin_only(path: Path) -> dict[str, int]:
    """Op histogram; raises if any Flex / custom op slipped in (earlier attempts died on those)."""
    counts: dict[str, int] = {}
    for name in op_names(path):
        counts[name] = counts.get(name, 0) + 1
    bad = sorted(n for n in counts if n.startswith("Flex") or n.upper() in ("CUSTOM", "DELEGATE"))
    if bad:
        raise ExportError(f"{path.name} contains non-builtin ops {bad}: they need SELECT_TF_OPS and are slow on phones")
    return counts
