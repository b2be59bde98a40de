"""Standard TFLite Metadata (`TFLITE_METADATA`): what Android Studio's ML Model Binding, the LiteRT
support library and MediaPipe read from a `.tflite` -- name, description, version, author, licence;
the input as an RGB image with its normalisation; the output's description with the joint names as
an associated labels file.

Written and read with MediaPipe's metadata library (``mediapipe.tasks.python.metadata``: the
maintained successor of tflite-support's writers; tflite-support 0.4.4 does not install beside
tensorflow 2.21). Every MediaPipe release that installs beside numpy 2 (0.10.30 to 1.2.3) imports a
compiled helper it no longer ships, ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``,
whose one function computes the metadata's minimum parser version; :func:`_install_version_helper`
provides that function (a port of MediaPipe's ``metadata_version.cc``) before the library is
imported. Everything else -- the schema, the tensor records, packing the labels file into the
model, reading it back -- is MediaPipe's own code.
"""

from __future__ import annotations

import io
import sys
import tempfile
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

_HELPER = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
LABELS_FILE = "joint_names.txt"


def _minimum_parser_version(buffer: bytes) -> str:
    """The lowest metadata parser version that reads ``buffer``: the newest schema member it uses
    (the versions are MediaPipe's, mediapipe/tasks/cc/metadata/metadata_version.cc)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    found = [(1, 0, 0)]

    def files(entries) -> None:
        for f in entries or []:
            if f.type == fb.AssociatedFileType.VOCABULARY:
                found.append((1, 0, 1))
            if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                found.append((1, 4, 0))
            if f.version is not None:
                found.append((1, 4, 1))

    def units(entries) -> None:
        for u in entries or []:
            if u.optionsType in (fb.ProcessUnitOptions.BertTokenizerOptions,
                                 fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
                found.append((1, 1, 0))
            if u.optionsType == fb.ProcessUnitOptions.RegexTokenizerOptions:
                found.append((1, 2, 1))

    for sub in md.subgraphMetadata or []:
        for tensor in (sub.inputTensorMetadata or []) + (sub.outputTensorMetadata or []):
            files(tensor.associatedFiles)
            units(tensor.processUnits)
            if tensor.content is not None and \
                    tensor.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                found.append((1, 3, 0))
        files(sub.associatedFiles)
        for processing in (sub.inputProcessUnits, sub.outputProcessUnits):
            if processing is not None:
                found.append((1, 1, 0))
                units(processing)
        if sub.inputTensorGroups is not None or sub.outputTensorGroups is not None:
            found.append((1, 2, 0))
        if sub.customMetadata is not None:
            found.append((1, 5, 0))
    files(md.associatedFiles)
    return ".".join(map(str, max(found)))


def _install_version_helper() -> None:
    if _HELPER in sys.modules:
        return
    try:  # a MediaPipe that ships it
        __import__(_HELPER)
        return
    except ImportError:
        pass
    parts = _HELPER.split(".")
    for i in range(3, len(parts)):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    helper = types.ModuleType(_HELPER)
    helper.GetMinimumMetadataParserVersion = _minimum_parser_version
    sys.modules[_HELPER] = helper


def _library():
    _install_version_helper()
    from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, writer_utils

    return metadata, metadata_info, writer_utils


@dataclass(frozen=True)
class TfliteMetadata:
    """What goes into a `.tflite`'s standard metadata."""

    name: str
    description: str
    version: str
    author: str
    licenses: str
    input_description: str
    norm_mean: tuple[float, ...]  # per channel: the app computes (pixel - mean) / std
    norm_std: tuple[float, ...]
    output_description: str
    joint_names: tuple[str, ...]


def write(tflite: bytes, info: TfliteMetadata) -> bytes:
    """``tflite`` with standard metadata and the joint-names labels file packed in; the signature and
    other metadata buffers are kept."""
    import flatbuffers

    metadata, metadata_info, writer_utils = _library()
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    with tempfile.TemporaryDirectory(prefix="tflite-metadata-") as tmp:
        labels, model_file = Path(tmp) / LABELS_FILE, Path(tmp) / "model.tflite"
        labels.write_text("\n".join(info.joint_names))
        model_file.write_bytes(tflite)  # populated in place (the buffer variant leaves a temp file to __del__)
        model = bytearray(tflite)
        general = metadata_info.GeneralMd(name=info.name, version=info.version, description=info.description,
                                          author=info.author, licenses=info.licenses)
        image = metadata_info.InputImageTensorMd(
            name="image", description=info.input_description, norm_mean=list(info.norm_mean),
            norm_std=list(info.norm_std), color_space_type=fb.ColorSpaceType.RGB,
            tensor_type=writer_utils.get_input_tensor_types(model)[0])
        joints = metadata_info.TensorMd(name="joints", description=info.output_description,
                                        associated_files=[metadata_info.AssociatedFileMd(
                                            str(labels), "the joint names, one per line, in output order",
                                            fb.AssociatedFileType.TENSOR_AXIS_LABELS)])
        subgraph = fb.SubGraphMetadataT()
        subgraph.inputTensorMetadata = [image.create_metadata()]
        subgraph.outputTensorMetadata = [joints.create_metadata()]
        model_md = general.create_metadata()
        model_md.subgraphMetadata = [subgraph]
        builder = flatbuffers.Builder(0)
        builder.Finish(model_md.Pack(builder), metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
        populator = metadata.MetadataPopulator.with_model_file(str(model_file))
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([str(labels)])
        populator.populate()
        return _fixed_zip_times(model_file.read_bytes())


def _fixed_zip_times(model: bytes) -> bytes:
    """The packed files again, appended the populator's way but stamped 1980-01-01 instead of the time of
    the export: the same model gives the same bytes."""
    with zipfile.ZipFile(io.BytesIO(model)) as packed:
        infos = packed.infolist()
        members = [(info.filename, packed.read(info)) for info in infos]
    buffer = io.BytesIO(model[: min(info.header_offset for info in infos)])
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def read(path: Path) -> tuple[dict, dict[str, str]]:
    """(the metadata as MediaPipe's MetadataDisplayer prints it, parsed; the packed files by name)."""
    import json

    metadata, _, _ = _library()
    displayer = metadata.MetadataDisplayer.with_model_file(str(path))
    files = {name: displayer.get_associated_file_buffer(name).decode()
             for name in displayer.get_packed_associated_file_list()}
    return json.loads(displayer.get_metadata_json()), files


def display(path: Path) -> str:
    """The metadata JSON exactly as MediaPipe's MetadataDisplayer prints it."""
    metadata, _, _ = _library()
    return metadata.MetadataDisplayer.with_model_file(str(path)).get_metadata_json()
