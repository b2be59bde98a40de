"""Read a ConvNeXtPose checkpoint, infer its architecture from tensor shapes, load it strictly.

The checkpoint is the truth: the spec is inferred from the tensors, and a requested variant
that disagrees is an error listing every mismatching tensor -- never ``strict=False``.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from common.errors import CheckpointError, CheckpointMismatchError
from common.files import file_digest
from models.network import ConvNeXtPose, expected_shapes
from models.spec import DEFAULT_JOINTS, NUM_HEAD_LAYERS, REGISTRY, ModelSpec, spec_for, upsample_count_by_rule

#: Top-level keys that hold the weights, in the order they are looked for.
STATE_DICT_KEYS = ("network", "state_dict", "model")
#: Legacy head key style (Sequential indices) -> official names, same order.
_LEGACY_HEAD = re.compile(r"^(head\.deconv_layers_\d+)\.([012])\.")
_LEGACY_NAMES = {"0": "dwconv", "1": "norm", "2": "pwconv"}
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MAX_LISTED = 12  # longer lists of keys are summarised


#: ``synthetic.kind`` of weights trained on the synthetic task (untrained synthetic files have another kind).
TRAINED_KIND = "trained-synthetic"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint that passed every check, with its inferred architecture."""

    path: Path
    sha256: str
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    matched_variant: str | None
    upsample_source: str  # "variant" | "rule H == D" | "user"
    head_key_style: str  # "named" | "legacy-indices"
    epoch: int | None
    synthetic: dict[str, Any] | None  # the `synthetic` marker written by make-checkpoint
    warnings: tuple[str, ...] = field(default=())

    @property
    def trained_synthetic(self) -> bool:
        """Weights trained on the synthetic task (models.training.reference): judged on its images."""
        return bool(self.synthetic) and self.synthetic.get("kind") == TRAINED_KIND

    def build_model(self) -> ConvNeXtPose:
        model = ConvNeXtPose(self.spec)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "variant": self.matched_variant,
            "spec": self.spec.to_dict(),
            "upsample_source": self.upsample_source,
            "head_key_style": self.head_key_style,
            "epoch": self.epoch,
            "synthetic": self.synthetic,
            "warnings": list(self.warnings),
        }


# ---- reading ---------------------------------------------------------------------------------
def read_file(path: Path) -> Any:
    """torch.load with weights_only=True; every failure becomes a CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file (.pth, .pth.tar, .tar)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    with open(path, "rb") as f:
        looks_like_zip = f.read(4) == b"PK\x03\x04"
    if looks_like_zip:
        check_storages(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused -- the file contains Python objects that only full unpickling could "
                "create, and unpickling can run arbitrary code. Re-save it with "
                "torch.save({'network': model.state_dict()}, path) from trusted code. "
                f"Detail: {_first_line(exc)}"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # torch raises many types for damaged files; all mean the same to a user
        if looks_like_zip or "zip" in str(exc).lower():
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint archive ({_first_line(exc)})") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None


#: Largest tensor a ConvNeXtPose checkpoint holds is L's final layer (1152 x 512 floats, 2.4 MB); a
#: storage claiming more than this is refused before anything is allocated.
MAX_STORAGE_BYTES = 1 << 28


class _Anything:
    """Stands for every object of a checkpoint's pickle while only its storage records are read."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> "_Anything":
        return _Anything()

    def __setitem__(self, key, value) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def append(self, value) -> None:
        pass

    def extend(self, values) -> None:
        pass


_ELEMENT_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}


def check_storages(path: Path) -> None:
    """Before torch allocates anything: every tensor storage the archive's pickle declares must exist in
    the archive, hold the bytes it claims, and claim no absurd amount (a hostile or damaged header)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1:
                return  # let torch say what is wrong
            prefix = pickles[0][: -len("data.pkl")]
            sizes = {n[len(prefix) + len("data/"):]: archive.getinfo(n).file_size for n in names
                     if n.startswith(prefix + "data/")}
            records: list[tuple] = []

            class Reader(pickle.Unpickler):
                def find_class(self, module: str, name: str):
                    return type(name, (_Anything,), {}) if name.endswith("Storage") else _Anything

                def persistent_load(self, pid):
                    records.append(tuple(pid))
                    return _Anything()

            Reader(archive.open(pickles[0])).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OSError):
        return  # torch reports these itself; this check is only about sizes
    for record in records:
        if len(record) < 5 or record[0] != "storage":
            continue
        _, storage_type, key, _, numel = record[:5]
        element = _ELEMENT_BYTES.get(getattr(storage_type, "__name__", "").removesuffix("Storage"), 1)
        claimed = int(numel) * element if str(numel).lstrip("-").isdigit() else -1
        if claimed < 0 or claimed > MAX_STORAGE_BYTES:
            raise CheckpointError(f"{path}: refused -- tensor storage {key!r} claims {claimed:,} bytes, more than any "
                                  f"ConvNeXtPose tensor ({MAX_STORAGE_BYTES:,}): a damaged or hostile file")
        if str(key) not in sizes:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint archive (tensor storage {key!r} is "
                                  "missing from the archive)")
        if sizes[str(key)] < claimed:
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint archive (tensor storage {key!r} claims "
                                  f"{claimed:,} bytes, the file holds {sizes[str(key)]:,})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def extract_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], int | None, dict | None]:
    """(raw state_dict, epoch, synthetic marker) from any accepted top-level layout."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint -- top level is a {type(obj).__name__}, expected a dict")
    if not obj:
        raise CheckpointError(f"{path}: checkpoint is an empty dict")
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else None
    synthetic = obj.get("synthetic") if isinstance(obj.get("synthetic"), Mapping) else None
    for key in STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            state = obj[key]
            where = f"'{key}'"
            for _ in range(3):  # nested wrappers, e.g. {'model': {'state_dict': {...}}}
                inner = [k for k in STATE_DICT_KEYS if isinstance(state.get(k), Mapping)]
                if len(state) != 1 or not inner:
                    break
                state, where = state[inner[0]], f"{where} -> '{inner[0]}'"
            break
    else:
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            state, where = obj, "top level (bare state_dict)"
        else:
            raise CheckpointError(
                f"{path}: no weights found -- expected a state_dict under one of "
                f"{', '.join(repr(k) for k in STATE_DICT_KEYS)} or a bare state_dict; top-level keys: "
                f"{_summarise(sorted(map(str, obj)))}"
            )
    if not state:
        raise CheckpointError(f"{path}: the state_dict at {where} is empty")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries at {where} that are not tensors: {_summarise(not_tensors)}")
    return dict(state), epoch, dict(synthetic) if synthetic else None


def normalise_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Strip DataParallel's ``module.`` and map legacy head keys to the official names."""
    out: dict[str, torch.Tensor] = {}
    style = "named"
    for key, tensor in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        legacy = _LEGACY_HEAD.match(name)
        if legacy:
            style = "legacy-indices"
            name = f"{legacy.group(1)}.{_LEGACY_NAMES[legacy.group(2)]}." + name[legacy.end():]
        out[name] = tensor
    return out, style


def check_values(state: Mapping[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Refuse wrong dtypes and non-finite values; cast other float types to float32 with a warning."""
    wrong_dtype, non_finite, cast = [], [], []
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
                wrong_dtype.append(f"{name} ({tensor.dtype}, expected an integer)")
            out[name] = tensor
            continue
        if tensor.dtype not in _FLOAT_DTYPES:
            wrong_dtype.append(f"{name} ({tensor.dtype}, expected float32)")
            continue
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            non_finite.append(f"{name} ({bad} of {tensor.numel()} values are NaN/Inf)")
            continue
        if tensor.dtype != torch.float32:
            cast.append(f"{name} ({tensor.dtype})")
            tensor = tensor.float()
        out[name] = tensor
    if wrong_dtype:
        raise CheckpointError(f"{path}: tensors with a wrong dtype: {_summarise(wrong_dtype)}")
    if non_finite:
        raise CheckpointError(f"{path}: tensors with non-finite values: {_summarise(non_finite)}")
    dtypes = sorted({c.rsplit("(", 1)[1].rstrip(")") for c in cast})
    warnings = [f"{len(cast)} tensors stored as {', '.join(dtypes)}: cast to float32"] if cast else []
    return out, warnings


# ---- inference -------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferredShape:
    """What the tensors say; ``num_upsample`` is not among them."""

    depths: tuple[int, int, int, int]
    dims: tuple[int, int, int, int]
    head_channels: int
    output_channels: int
    in_chans: int


def infer_shape(state: Mapping[str, torch.Tensor], path: Path) -> InferredShape:
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(
                f"{path}: cannot infer the architecture -- tensor '{key}' is missing. Is this a ConvNeXtPose "
                f"checkpoint? Keys start with: {_summarise(sorted({k.split('.')[0] for k in state}))}"
            )
        s = tuple(state[key].shape)
        if len(s) != ndim:
            raise CheckpointError(f"{path}: tensor '{key}' has shape {list(s)}, expected {ndim} dimensions")
        return s

    stem = shape("backbone.downsample_layers.0.0.weight", 4)
    dims = [stem[0]]
    for i in range(1, 4):
        dims.append(shape(f"backbone.downsample_layers.{i}.1.weight", 4)[0])
    depths = []
    for i in range(4):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"backbone\.stages\.{i}\.(\d+)\.", k))}
        if not blocks:
            raise CheckpointError(f"{path}: cannot infer the architecture -- no blocks found for backbone.stages.{i}")
        depths.append(max(blocks) + 1)
    head = shape("head.deconv_layers_1.pwconv.weight", 4)[0]
    final = shape("head.final_layer.weight", 4)[0]
    return InferredShape(tuple(depths), tuple(dims), head, final, stem[1])  # type: ignore[arg-type]


def spec_from_shape(
    shape: InferredShape, joints: int, path: Path, num_upsample: int | None = None, name: str = "custom"
) -> tuple[ModelSpec, str]:
    """A full spec from the tensor shapes; returns (spec, where num_upsample came from)."""
    if shape.output_channels % joints:
        raise CheckpointError(
            f"{path}: head.final_layer has {shape.output_channels} output channels, which is not a whole "
            f"number of depth bins for {joints} joints ({shape.output_channels}/{joints} = "
            f"{shape.output_channels / joints:.3f}). Pass the right --joints (18 Human3.6M, 21 MuCo)."
        )
    depth_bins = shape.output_channels // joints
    source = "user"
    if num_upsample is None:
        num_upsample = upsample_count_by_rule(depth_bins)
        source = "rule H == D"
        if num_upsample is None:
            raise CheckpointError(
                f"{path}: cannot infer the number of upsampling layers: depth bins D={depth_bins} is not "
                f"8*2^n for n in 0..{NUM_HEAD_LAYERS}. Pass --variant or --upsample."
            )
    spec = ModelSpec(
        name=name,
        depths=shape.depths,
        dims=shape.dims,
        head_channels=shape.head_channels,
        num_upsample=num_upsample,
        depth_bins=depth_bins,
        joints=joints,
        in_chans=shape.in_chans,
    )
    return spec, source


def matching_variant(spec: ModelSpec) -> str | None:
    """The registered variant whose architecture equals ``spec`` (for the same joints), if any."""
    for name in REGISTRY:
        if spec_for(name, spec.joints).same_architecture(spec):
            return name
    return None


# ---- comparison ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeReport:
    """How a state_dict differs from what a spec expects."""

    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # name, checkpoint, expected
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unexpected)

    def lines(self) -> list[str]:
        out = []
        if self.mismatched:
            out.append(f"{len(self.mismatched)} tensor(s) with a different shape (checkpoint vs expected):")
            # convolution weights first: they carry all of the architecture's numbers
            ordered = sorted(self.mismatched, key=lambda m: len(m[2]) < 4)
            for name, got, want in ordered[:_MAX_LISTED]:
                out.append(f"  {name}: checkpoint {list(got)}, expected {list(want)}")
            if len(self.mismatched) > _MAX_LISTED:
                out.append(f"  ... and {len(self.mismatched) - _MAX_LISTED} more")
        if self.missing:
            out.append(f"{len(self.missing)} missing key(s) in modules: {_summarise(_modules(self.missing))}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected key(s) in modules: {_summarise(_modules(self.unexpected))}")
        return out


def compare_shapes(state: Mapping[str, torch.Tensor], spec: ModelSpec) -> ShapeReport:
    expected = expected_shapes(spec)
    mismatched = tuple(
        (k, tuple(state[k].shape), want) for k, want in expected.items() if k in state and tuple(state[k].shape) != want
    )
    missing = tuple(k for k in expected if k not in state)
    unexpected = tuple(k for k in state if k not in expected)
    return ShapeReport(mismatched, missing, unexpected)


def _describe_spec(spec: ModelSpec) -> str:
    return (
        f"depths {list(spec.depths)}, dims {list(spec.dims)}, head {spec.head_channels}, "
        f"D {spec.depth_bins}, joints {spec.joints}"
    )


# ---- the one entry point ---------------------------------------------------------------------
def load_checkpoint(
    path: str | Path,
    variant: str | ModelSpec | None = None,
    joints: int = DEFAULT_JOINTS,
    num_upsample: int | None = None,
) -> LoadedCheckpoint:
    """Read, normalise, check and infer. Raises CheckpointError (or CheckpointMismatchError)."""
    path = Path(path)
    if joints < 1:
        raise CheckpointError(f"--joints {joints}: needs at least one joint")
    if num_upsample is not None and not 0 <= num_upsample <= NUM_HEAD_LAYERS:
        raise CheckpointError(f"--upsample {num_upsample}: the head has {NUM_HEAD_LAYERS} layers, so 0 to "
                              f"{NUM_HEAD_LAYERS} of them can upsample")
    state, epoch, synthetic = extract_state_dict(read_file(path), path)
    state, style = normalise_keys(state)
    state, warnings = check_values(state, path)
    shape = infer_shape(state, path)

    requested: ModelSpec | None
    if isinstance(variant, ModelSpec):
        requested = variant
    elif variant:
        try:
            requested = spec_for(variant, joints)
        except KeyError as exc:
            raise CheckpointError(str(exc.args[0])) from None
    else:
        requested = None

    joints = requested.joints if requested else joints
    if requested is not None and num_upsample is None:
        # The variant tells the upsampling count; the rule is only needed to name a better match.
        inferred, source = spec_from_shape(shape, joints, path, requested.num_upsample)
        try:
            match = matching_variant(spec_from_shape(shape, joints, path)[0])
        except CheckpointError:
            match = None
        match = matching_variant(inferred) or match
        source = "variant"
    else:
        inferred, source = spec_from_shape(shape, joints, path, num_upsample)
        match = matching_variant(inferred)

    if requested is not None:
        report = compare_shapes(state, requested)
        if not report.ok:
            hint = (
                f"The checkpoint matches registered variant {match} -- use --variant {match}."
                if match
                else "The checkpoint matches no registered variant; omit --variant to load it as a custom spec."
            )
            raise CheckpointMismatchError(
                "\n".join(
                    [
                        f"{path}: checkpoint does not match variant {requested.name} "
                        f"({_describe_spec(requested)}).",
                        f"The checkpoint's tensors say: {_describe_spec(inferred)}.",
                        *report.lines(),
                        hint,
                    ]
                )
            )
        spec = requested
    else:
        # No variant requested: the inferred spec must still account for every key exactly.
        report = compare_shapes(state, inferred)
        if not report.ok:
            raise CheckpointMismatchError(
                "\n".join(
                    [f"{path}: tensors do not form a consistent ConvNeXtPose ({_describe_spec(inferred)}).",
                     *report.lines()]
                )
            )
        spec = dataclasses.replace(inferred, name=match) if match else inferred
        if match is None:
            warnings.append("architecture matches no registered variant; loaded as a custom spec")
    if source == "rule H == D":
        warnings.append(
            f"number of upsampling layers ({spec.num_upsample}) has no weights; inferred by the rule heatmap H == D"
        )
    loaded = LoadedCheckpoint(
        path=path,
        sha256=file_digest(path),
        spec=spec,
        state_dict=state,
        matched_variant=match,
        upsample_source=source,
        head_key_style=style,
        epoch=epoch,
        synthetic=synthetic,
        warnings=tuple(warnings),
    )
    loaded.build_model()  # strict load: proves the state_dict fits before anyone relies on it
    return loaded


def _modules(keys: tuple[str, ...]) -> list[str]:
    """Distinct module paths of tensor keys, in order: 'a.b.weight', 'a.b.bias' -> 'a.b'."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def _summarise(items: list[str] | tuple[str, ...]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")
