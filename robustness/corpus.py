"""A deterministic corpus of bad inputs: checkpoints, images, export folders and options, each with what
the command must do with it (docs/reliability.md).

Everything is generated from a seed into a scratch folder: nothing is downloaded or stored in git.
A case is one `convnextpose` command line and its expected exit code (2 for a refusal; 0 where the
input is legitimate, e.g. a checkpoint saved in fp16, a CMYK photo) and the text the message must
hold (the file, tensor or option it names).
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.network import ConvNeXtPose
from models.spec import ModelSpec

#: A small network with every module kind of the real ones, so thousands of loads take seconds.
SMALL = ModelSpec("small", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), head_channels=16, num_upsample=2,
                  depth_bins=32)
TRUNCATIONS = 40
BIT_FLIPS = 40


@dataclass(frozen=True)
class Case:
    family: str  # checkpoint | image | export folder | option
    name: str
    argv: tuple[str, ...]
    expect: frozenset[int]  # acceptable exit codes
    message: str = ""  # must appear in the output when the exit code is not 0 (names the file/tensor/option)
    out: Path | None = None  # OUT the command writes to: unchanged on refusal, complete on success
    extra: dict = field(default_factory=dict, compare=False)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {f"module.{k}": v for k, v in ConvNeXtPose(SMALL).state_dict().items()}


def _save(path: Path, payload, legacy: bool = False) -> Path:
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def _released(state: dict) -> dict:
    return {"epoch": 3, "network": state}


def checkpoint_cases(root: Path, seed: int) -> list[Case]:
    """Damaged, hostile and odd checkpoint files, read by `inspect` (the export reads them the same way)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    good = _save(root / "good.pth.tar", _released(_state()))
    data = good.read_bytes()
    cases: list[Case] = []

    def add(name: str, path: Path, expect=(2,), message: str | None = None) -> None:
        cases.append(Case("checkpoint", name, ("inspect", str(path)), frozenset(expect),
                          str(path) if message is None else message))

    for i, cut in enumerate(sorted(rng.choice(np.arange(1, len(data) - 1), TRUNCATIONS, replace=False))):
        path = root / f"truncated-{i:02d}.pth.tar"
        path.write_bytes(data[:cut])
        add(f"truncated at byte {cut}", path)
    for i, at in enumerate(sorted(rng.choice(len(data), BIT_FLIPS, replace=False))):
        flipped = bytearray(data)
        flipped[at] ^= 1 << int(rng.integers(8))
        path = root / f"bitflip-{i:02d}.pth.tar"
        path.write_bytes(bytes(flipped))
        # a flip inside tensor bytes is a different, valid checkpoint (its sha256 says so): 0 is right too
        add(f"bit flip at byte {at}", path, expect=(0, 2), message="")
    for name, content in (("text", b"this is not a checkpoint\n"), ("random", rng.bytes(5000)),
                          ("json", json.dumps({"network": {}}).encode()), ("png", _png_bytes()),
                          ("zip-of-text", _zip_bytes({"notes.txt": b"hello"}))):
        path = root / f"not-a-checkpoint-{name}.pth"
        path.write_bytes(content)
        add(f"not a checkpoint ({name})", path)
    (root / "empty.pth").write_bytes(b"")
    add("empty file", root / "empty.pth")
    (root / "a-folder.pth").mkdir(exist_ok=True)
    add("a directory", root / "a-folder.pth")
    add("missing file", root / "does-not-exist.pth")
    for legacy in (False, True):  # zip and bare (legacy) pickles holding an arbitrary object
        path = _save(root / f"code-{'bare' if legacy else 'zip'}.pth", {"network": _state(), "hook": _Config()},
                     legacy=legacy)
        add(f"pickle with code ({'bare' if legacy else 'zip'})", path, message="refused")
    path = root / "reduce-code.pth"
    path.write_bytes(pickle.dumps(_Exec()))
    add("pickle that runs a command", path, message="refused")
    state = _state()
    keys = list(state)
    for i, key in enumerate(keys[:: max(1, len(keys) // 6)][:6]):
        for bad, label in ((float("nan"), "NaN"), (float("inf"), "Inf")):
            if not state[key].is_floating_point():
                continue
            broken = dict(state)
            broken[key] = state[key].clone().flatten().index_fill_(0, torch.tensor([0]), bad).view_as(state[key])
            add(f"{label} in {key}", _save(root / f"{label.lower()}-{i}.pth", _released(broken)),
                message=key.removeprefix("module."))
    for dtype in (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64):
        broken = dict(state)
        key = "module.head.final_layer.weight"
        broken[key] = state[key].to(dtype)
        add(f"{dtype} weights", _save(root / f"dtype-{str(dtype)[6:]}.pth", _released(broken)),
            message="head.final_layer.weight")
    for dtype in (torch.float16, torch.bfloat16, torch.float64):  # legitimate: loaded, cast, one warning line
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        add(f"whole checkpoint in {dtype}", _save(root / f"{str(dtype)[6:]}.pth", _released(cast)), expect=(0,),
            message="")
    for i, key in enumerate(keys[1::7][:6]):
        missing = {k: v for k, v in state.items() if k != key}
        add(f"missing {key}", _save(root / f"missing-{i}.pth", _released(missing)), message="missing key")
    extra = dict(state)
    extra["module.head.extra_layer.weight"] = torch.zeros(4)
    add("unexpected key", _save(root / "extra.pth", _released(extra)), message="unexpected key")
    renamed = {k.replace("pwconv1", "fc1"): v for k, v in state.items()}
    add("renamed keys (timm-style fc1)", _save(root / "renamed.pth", _released(renamed)), message="missing key")
    kinds = {"stem conv": "backbone.downsample_layers.0.0.weight",
             "stem BatchNorm": "backbone.downsample_layers.0.1.weight",
             "downsampling BatchNorm": "backbone.downsample_layers.2.0.running_var",
             "downsampling conv": "backbone.downsample_layers.3.1.weight",
             "block dwconv": "backbone.stages.2.1.dwconv.weight",
             "block pwconv1": "backbone.stages.1.0.pwconv1.weight",
             "block pwconv2 bias": "backbone.stages.0.0.pwconv2.bias",
             "final norm": "backbone.norm.weight",
             "head dwconv": "head.deconv_layers_2.dwconv.weight",
             "head pwconv": "head.deconv_layers_1.pwconv.weight",
             "final layer bias": "head.final_layer.bias"}
    for i, (kind, key) in enumerate(kinds.items()):
        tensor = state[f"module.{key}"]
        variants = {"wrong shape": torch.zeros(*[d + 1 for d in tensor.shape]),
                    "zero-size": torch.zeros(0)}
        if tensor.dim() >= 2 and tensor.shape[0] != tensor.shape[1]:
            variants["transposed"] = tensor.transpose(0, 1).contiguous()
        for label, value in variants.items():
            broken = dict(state)
            broken[f"module.{key}"] = value
            path = _save(root / f"{label.replace(' ', '-')}-{i}.pth", _released(broken))
            add(f"{label} {kind}", path, message="")  # the message names the tensor or the architecture it implies
    path = root / "short-storage.pth.tar"
    path.write_bytes(_rewrite_member(data, lambda name, blob: blob[: len(blob) // 2] if name.endswith("/data/0")
                                     else blob))
    add("a storage claiming more bytes than the file has", path, message="claims")
    path = root / "huge-storage.pth.tar"
    path.write_bytes(_claim_huge_storage(data))
    add("a storage claiming 2.4 GB", path, message="claims")
    wrappers = {"state_dict": {"state_dict": _strip(state)}, "model/state_dict": {"model": {"state_dict": state}},
                "network/network": {"network": {"network": state}}, "model/network/state_dict":
                {"model": {"network": {"state_dict": state}}}}
    for i, (label, payload) in enumerate(wrappers.items()):
        add(f"nested wrapper {label}", _save(root / f"wrapped-{i}.pth", payload), expect=(0,), message="")
    add("bare state_dict without module.", _save(root / "bare.pth", _strip(state)), expect=(0,), message="")
    mixed = {(k.removeprefix("module.") if j % 2 else k): v for j, (k, v) in enumerate(state.items())}
    add("keys with and without module.", _save(root / "mixed.pth", _released(mixed)), expect=(0,), message="")
    add("top level a list", _save(root / "list.pth", [1, 2, 3]), message="top level is a list")
    add("empty dict", _save(root / "empty-dict.pth", {}), message="empty dict")
    add("empty network", _save(root / "empty-net.pth", {"network": {}}), message="empty")
    add("a ResNet", _save(root / "resnet.pth", {"conv1.weight": torch.zeros(8, 3, 7, 7)}), message="missing")
    return cases


class _Config:  # an arbitrary object: needs full unpickling
    depth = 3


class _Exec:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def _strip(state: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return buffer.getvalue()


def _rewrite_member(data: bytes, change) -> bytes:
    """The same zip archive with each member's bytes passed through ``change(name, bytes)``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, change(info.filename, src.read(info.filename)))
    return out.getvalue()


def _claim_huge_storage(data: bytes) -> bytes:
    """The pickle's first storage record rewritten to claim 600 M floats (2.4 GB) it does not have."""
    import pickletools

    def change(name: str, blob: bytes) -> bytes:
        if not name.endswith("data.pkl"):
            return blob
        ops = list(pickletools.genops(blob))
        persid = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
        # the record is a tuple (..., numel): the last integer before BINPERSID is the element count
        at = next(i for i in range(persid - 1, 0, -1) if ops[i][0].name in ("BININT", "BININT1", "BININT2"))
        start = ops[at][2]
        end = ops[at + 1][2]
        return blob[:start] + b"J" + (600_000_000).to_bytes(4, "little") + blob[end:]

    return _rewrite_member(data, change)


# ---- images --------------------------------------------------------------------------------------
def image_cases(root: Path, checkpoint: Path, out_root: Path, seed: int) -> list[Case]:
    """Bad and odd photo folders for `export --images` and `--calib`, and photos for `demo`."""
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    folders: dict[str, tuple[str, frozenset[int], str]] = {}

    def folder(name: str, files: dict[str, object], expect=(2,), message: str = "") -> None:
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        for fname, content in files.items():
            if isinstance(content, Image.Image):
                content.save(path / fname)
            else:
                (path / fname).write_bytes(content)
        folders[name] = (str(path), frozenset(expect), message or str(path))

    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG")
    cmyk = io.BytesIO()
    photo.convert("CMYK").save(cmyk, "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    rotated = io.BytesIO()
    photo.save(rotated, "JPEG", exif=exif)
    folder("empty", {}, message="holds no images")
    folder("not-images", {"a.jpg": b"GIF89a not really", "b.png": rng.bytes(300)}, message="cannot be read")
    folder("truncated-jpeg", {"a.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2]}, message="a.jpg")
    folder("one-pixel", {"a.png": Image.new("RGB", (1, 1))}, message="too small")
    folder("16-bit-png", {"a.png": Image.fromarray(rng.integers(0, 65535, (64, 64), dtype=np.uint16))}, expect=(0,))
    folder("grayscale", {"a.png": photo.convert("L")}, expect=(0,))
    folder("cmyk-jpeg", {"a.jpg": cmyk.getvalue()}, expect=(0,))
    folder("rgba-png", {"a.png": photo.convert("RGBA")}, expect=(0,))
    folder("exif-rotated", {"a.jpg": rotated.getvalue()}, expect=(0,))
    folder("decompression-bomb", {"a.png": _bomb_png()}, message="decompression bomb")
    cases = []
    for name, (path, expect, message) in folders.items():
        out = out_root / f"images-{name}"
        cases.append(Case("image", f"--images {name}", ("export", "--checkpoint", str(checkpoint), "--out", str(out),
                                                         "--formats", "onnx", "--images", path), expect, message,
                          out=out))
    for name in ("empty", "truncated-jpeg", "decompression-bomb", "cmyk-jpeg"):
        path, expect, message = folders[name]
        out = out_root / f"calib-{name}"
        cases.append(Case("image", f"--calib {name}", ("export", "--checkpoint", str(checkpoint), "--out", str(out),
                                                        "--formats", "onnx", "--calib", path), expect, message,
                          out=out))
    return cases


def _bomb_png() -> bytes:
    """A valid PNG header declaring 30000 x 30000 pixels (a few hundred bytes on disk)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def demo_cases(root: Path, out_dir: Path) -> list[Case]:
    """`demo` on bad photos (needs an export)."""
    folder = root / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.jpg").write_text("not a photo")
    (folder / "bomb.png").write_bytes(_bomb_png())
    Image.new("RGB", (4, 4)).save(folder / "tiny.png")
    return [Case("image", f"demo {name}", ("demo", str(folder / name), "--out", str(out_dir), "--output",
                                           str(folder / f"{name}.demo.png")), frozenset({2}), name)
            for name in ("text.jpg", "bomb.png", "tiny.png", "missing.jpg")]


# ---- export folders ------------------------------------------------------------------------------
def export_folder_cases(root: Path, export: Path) -> list[Case]:
    """Damaged copies of a good export for `verify`, `bench`, `check-golden`."""
    manifest = json.loads((export / "manifest.json").read_text())
    art = manifest["artifacts"][0]["file"]
    damaged: dict[str, tuple[object, str]] = {
        "no manifest": (lambda d: (d / "manifest.json").unlink(), "manifest.json not found"),
        "truncated manifest": (lambda d: (d / "manifest.json").write_text((d / "manifest.json").read_text()[:200]),
                               "unreadable"),
        "manifest not a dict": (lambda d: (d / "manifest.json").write_text("[1, 2]"), "not a manifest"),
        "unknown schema version": (lambda d: _edit_json(d / "manifest.json", schema_version=99), "schema version 99"),
        "manifest missing a field": (lambda d: _edit_json(d / "manifest.json", spec=None), "not a valid manifest"),
        "an artifact missing": (lambda d: (d / art).unlink(), f"{art}: missing"),
        "an artifact changed": (lambda d: _append(d / art), f"{art}: changed"),
        "not a folder": (lambda d: (shutil.rmtree(d), d.write_text("x")), "not a folder"),
    }
    root.mkdir(parents=True, exist_ok=True)
    results = root / "golden-results.json"
    results.write_text(json.dumps({"artifact": art, "joints": {}}))
    cases = []
    for i, (label, (damage, message)) in enumerate(damaged.items()):
        copy = root / f"export-{i}"
        shutil.copytree(export, copy)
        damage(copy)
        for command in (("verify", str(copy)), ("bench", str(copy), "--only", "onnxruntime", "--min-runs", "1",
                                                "--min-seconds", "0", "--warmup", "0"),
                        ("check-golden", str(copy), str(results))):
            cases.append(Case("export folder", f"{command[0]}: {label}", command, frozenset({2}), message))
    return cases


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"\0")


# ---- options -------------------------------------------------------------------------------------
def option_cases(root: Path, checkpoint: Path) -> list[Case]:
    root.mkdir(parents=True, exist_ok=True)
    out = root / "options-out"
    a_file = root / "a-file"
    a_file.write_text("x")
    read_only = root / "read-only"
    read_only.mkdir(exist_ok=True)
    read_only.chmod(0o555)
    base = ("export", "--checkpoint", str(checkpoint), "--formats", "onnx")
    cases = [
        Case("option", "unknown variant", ("export", "--variant", "XXL", "--out", str(out)), frozenset({2}), "XXL"),
        Case("option", "--joints not dividing the head", (*base, "--out", str(out), "--joints", "7"), frozenset({2}),
             "--joints"),
        Case("option", "--joints 0", ("inspect", str(checkpoint), "--joints", "0"), frozenset({2}), "--joints"),
        Case("option", "--upsample 9 (export)", (*base, "--out", str(out), "--upsample", "9"), frozenset({2}),
             "--upsample 9"),
        Case("option", "--upsample 9 (inspect)", ("inspect", str(checkpoint), "--upsample", "9"), frozenset({2}),
             "--upsample 9"),
        Case("option", "--opset 7", (*base, "--out", str(out), "--opset", "7"), frozenset({2}), "--opset 7"),
        Case("option", "unknown format", ("export", "--checkpoint", str(checkpoint), "--out", str(out), "--formats",
                                          "onnx,tflight"), frozenset({2}), "tflight"),
        Case("option", "tflite-int8 without tflite", (*base[:-1], "tflite-int8", "--out", str(out)), frozenset({2}),
             "tflite"),
        Case("option", "OUT is a file", (*base, "--out", str(a_file)), frozenset({2}), "is a file", out=a_file),
        Case("option", "OUT is read-only", (*base, "--out", str(read_only)), frozenset({2}), "read-only",
             out=read_only),
        Case("option", "--max-error-px -1", (*base, "--out", str(out), "--max-error-px", "-1"), frozenset({2}),
             "--max-error-px"),
        Case("option", "--normalized-input with a Core ML image input",
             ("export", "--checkpoint", str(checkpoint), "--out", str(out), "--formats", "coreml",
              "--normalized-input", "--coreml-input", "image"), frozenset({2}), "--coreml-input image"),
        Case("option", "--untrained with --checkpoint", ("export", "--untrained", "--checkpoint", str(checkpoint),
                                                         "--out", str(out)), frozenset({2}), "--untrained"),
        Case("option", "bench --compare a missing file", ("bench", "--compare", str(root / "a.json"),
                                                          str(root / "b.json")), frozenset({2}), "a.json"),
    ]
    return [c if c.out else Case(c.family, c.name, c.argv, c.expect, c.message, out=out) for c in cases]
