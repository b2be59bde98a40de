"""ONNX -> TFLite through onnx2tf's SavedModel, with a `serving_default` signature and builtin ops only.

onnx2tf converts NCHW ONNX to an NHWC TensorFlow graph. Its own .tflite files carry no
signature, so we convert its SavedModel with the TF Lite converter, after re-signing it with
the names `image` -> `joints`. onnx2tf reads a calibration sample from the working directory
(and downloads one if it is missing), so conversion runs in a folder where we wrote our own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from common.errors import ExportError
from common.quiet import hushed
from exporters.contract import INPUT_NAME, OUTPUT_NAME
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


def onnx_to_saved_model(onnx_path: Path, work_dir: Path, calibration_images: np.ndarray) -> Path:
    """Run onnx2tf; returns a SavedModel signed `serving_default(image) -> {joints}`."""
    import onnx2tf

    work_dir = work_dir.resolve()  # resolved before chdir
    work_dir.mkdir(parents=True, exist_ok=True)
    # onnx2tf rewrites its input file in place (it re-simplifies it): give it a private copy.
    private = work_dir / "onnx2tf_input.onnx"
    shutil.copyfile(onnx_path, private)
    np.save(work_dir / ONNX2TF_CALIBRATION_FILE, calibration_sample(calibration_images))
    raw = work_dir / "onnx2tf_saved_model"
    try:
        with _working_directory(work_dir), hushed() as captured:
            onnx2tf.convert(
                input_onnx_file_path=str(private),
                output_folder_path=str(raw),
                output_signaturedefs=True,
                batch_size=1,  # fixes a dynamic batch axis; phones run one crop at a time
                non_verbose=True,
            )
    except Exception as exc:  # not KeyboardInterrupt: Ctrl-C stops the export, it is not a converter failure
        tail = "\n".join(captured.getvalue().strip().splitlines()[-15:])
        raise ExportError(f"onnx2tf failed on {onnx_path.name}: {exc}\n{tail}") from None
    (work_dir / "onnx2tf.log").write_text(captured.getvalue())
    return _resign(raw, work_dir / "saved_model")


def _resign(src: Path, dst: Path) -> Path:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(src))
    inner = loaded.signatures[SIGNATURE_KEY]
    (in_key, in_spec), = inner.structured_input_signature[1].items()
    (out_key,) = inner.structured_outputs.keys()

    class Signed(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = loaded

        @tf.function(input_signature=[tf.TensorSpec(in_spec.shape, tf.float32, name=INPUT_NAME)])
        def serve(self, image):
            return {OUTPUT_NAME: self.model.signatures[SIGNATURE_KEY](**{in_key: image})[out_key]}

    module = Signed()
    tf.saved_model.save(module, str(dst), signatures={SIGNATURE_KEY: module.serve})
    return dst


def saved_model_to_tflite(saved_model: Path, precision: str) -> bytes:
    """Builtin ops only: the converter fails rather than emit Flex (SELECT_TF_OPS) ops."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_KEY])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision != "fp32":
        raise ExportError(f"TFLite precision {precision!r} is not one of {PRECISIONS}")
    return converter.convert()


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
