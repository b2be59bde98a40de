"""Parity inputs: real photos as square crops resized to the model input, seeded noise, and -- for
weights trained on the synthetic task -- fresh images of that task's evaluation split, the inputs
such weights must be judged on (their heatmaps are unimodal there, not on photos or noise)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import ExportError
from common.images import content_digest, list_images, read_rgb
from common.paths import SAMPLE_PHOTOS_DIR as DEFAULT_IMAGES_DIR
from common.tables import few
from judging.gates import PHOTO_UNIT
from models.checkpoint import LoadedCheckpoint
from models.spec import ModelSpec

NUM_RANDOM_INPUTS = 3
NUM_SYNTHETIC_INPUTS = 10
#: Source prefixes of the input groups; photos have none.
RANDOM_PREFIX, SYNTHETIC_PREFIX = "random:", "synthetic-eval:"
_WIDE = 1.3  # aspect ratio past which a photo gives left/centre/right crops
#: More judged images for a photo-judged cost: crops like the ones an app hands over -- a person detector's box
#: around the whole figure, square -- jittered as one detector differs from another or from frame to frame:
#: the box side scaled by up to +-10 %, its centre moved by up to 5 % of the side (IoU with the judged crop
#: >= ~0.75), mirrored half the time; the part of a box beyond the photo is black, as an app pads it.
BOX_SCALE, BOX_SHIFT = 0.10, 0.05
BOX_TAG = "box"  # source "photo.jpg:centre:box3": the 4th jittered box of the judged crop photo.jpg:centre
#: Crops of one photo are one unit of evidence (judging/gates.py), so more of them stop paying once each judged
#: crop has a few jittered boxes: measured, 3 per image already brought the small-sample widening an interval
#: needs from 1.7x to 1.2-1.4x at 8 images. A photo-judged cost is judged on at most this many rows per judged
#: crop (it and 7 boxes); the photos themselves are the rest of the evidence, and a user adds them (--images).
MAX_ROWS_PER_JUDGED_CROP = 8


@dataclass(frozen=True)
class InputSet:
    """(N, 3, S, S) float32 RGB in [0, 1], with where each row came from."""

    images: np.ndarray
    sources: tuple[str, ...]
    #: photo file name -> content digest of the decoded picture (common.images.content_digest)
    photo_digests: dict[str, str] = field(default_factory=dict)
    photos_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def with_more(self, more: "InputSet") -> "InputSet":
        """This set followed by ``more`` (its photos, if any, must be this set's)."""
        return InputSet(np.concatenate([self.images, more.images]), self.sources + more.sources, self.photo_digests,
                        self.photos_dir)

    def photo_row_digests(self) -> list[str | None]:
        """Per row: the content digest of the photo it was cropped from (None for other groups)."""
        return [self.photo_digests.get(s.split(":", 1)[0]) if m else None
                for s, m in zip(self.sources, self.group_masks().get("photos", np.zeros(len(self), bool)))]

    def units(self) -> np.ndarray:
        """Per row, its unit of evidence (judging/gates.cost_interval): the photo it was cut from
        (PHOTO_UNIT + content digest: every crop of a photo is one unit), else the row itself."""
        digests = self.photo_row_digests()
        return np.array([f"{PHOTO_UNIT}{d}" if d else source for source, d in zip(self.sources, digests)])

    def record(self, seed: int) -> dict:
        """What the manifest keeps so a later bench can rebuild exactly this set."""
        groups = self.group_masks()
        return {"images_dir": str(self.photos_dir.resolve()) if self.photos_dir else None,
                "photos": [{"file": f, "content_sha256": d} for f, d in sorted(self.photo_digests.items())],
                "random": int(groups.get("random", np.zeros(0)).sum()),
                "synthetic": int(groups.get("synthetic", np.zeros(0)).sum()),
                "seed": seed, "sources": list(self.sources), "judged_on": self.judged_group}

    def group_masks(self) -> dict[str, np.ndarray]:
        """Boolean row masks of the non-empty groups: 'photos', 'random', 'synthetic'."""
        random_ = np.array([s.startswith(RANDOM_PREFIX) for s in self.sources], dtype=bool)
        synthetic = np.array([s.startswith(SYNTHETIC_PREFIX) for s in self.sources], dtype=bool)
        masks = {"photos": ~(random_ | synthetic), "random": random_, "synthetic": synthetic}
        return {name: m for name, m in masks.items() if m.any()}

    @property
    def judged_group(self) -> str:
        """The group precision is judged on: the training distribution when there is one, else photos."""
        return "synthetic" if "synthetic" in self.group_masks() else "photos"

    def judged_mask(self) -> np.ndarray:
        """Rows of ``judged_group``."""
        return self.group_masks()[self.judged_group]


def square_crops(image: Image.Image) -> list[tuple[str, Image.Image]]:
    """Centre square crop; wide photos (group shots) also give left and right crops."""
    w, h = image.size
    side = min(w, h)
    offsets = {"centre": ((w - side) // 2, (h - side) // 2)}
    if max(w, h) / side > _WIDE:
        offsets["left" if w > h else "top"] = (0, 0)
        offsets["right" if w > h else "bottom"] = (w - side, h - side)
    return [(name, image.crop((x, y, x + side, y + side))) for name, (x, y) in offsets.items()]


def load_images(folder: Path, size: int) -> InputSet:
    arrays, sources, digests = [], [], {}
    for path in list_images(folder, "images", ExportError):
        photo = read_rgb(path, "image", ExportError)
        digests[path.name] = content_digest(photo)
        for crop_name, crop in square_crops(photo):
            resized = crop.resize((size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            sources.append(f"{path.name}:{crop_name}")
    return InputSet(np.stack(arrays), tuple(sources), digests, Path(folder))


def random_inputs(n: int, size: int, seed: int) -> InputSet:
    """Seeded noise pictures: 8-bit values / 255 like every other input, so a model that takes a picture
    (a Core ML image input) sees exactly what the others see."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size)).astype(np.float32) / 255.0
    return InputSet(images, tuple(f"{RANDOM_PREFIX}seed{seed}:{i}" for i in range(n)))


def synthetic_inputs(spec: ModelSpec, n: int, seed: int, start: int = 0) -> InputSet:
    """Images start..start+n-1 of the synthetic task's evaluation split (never used in training); each
    image depends on its index only, so a set extended later holds the same first images."""
    from models.synthetic.task import EVAL, render_batch

    images = render_batch(spec, seed, start, n, EVAL).images.numpy()
    return InputSet(images, tuple(f"{SYNTHETIC_PREFIX}seed{seed}:{i}" for i in range(start, start + n)))


def gpu_rows(inputs: InputSet, golden_rows: list[int]) -> np.ndarray:
    """The rows a file is judged on off this machine's CPU (the GPU accelerator): the judged group's and the
    golden inputs, in the set's order."""
    return np.array(sorted(set(np.flatnonzero(inputs.judged_mask()).tolist()) | set(golden_rows)), dtype=int)


def square_box(image_size: tuple[int, int], crop_name: str) -> tuple[int, int, int]:
    """(x, y, side) of the judged square crop ``crop_name`` of a photo of ``image_size`` (square_crops)."""
    w, h = image_size
    side = min(w, h)
    x, y = {"centre": ((w - side) // 2, (h - side) // 2), "left": (0, 0), "top": (0, 0),
            "right": (w - side, h - side), "bottom": (w - side, h - side)}[crop_name]
    return x, y, side


def box_crop(photo: Image.Image, crop_name: str, size: int, seed: int, source: str, k: int) -> np.ndarray:
    """The ``k``-th jittered detector box around the judged crop ``crop_name`` of ``photo`` (BOX_SCALE,
    BOX_SHIFT), resized to ``size``; it depends on (seed, source, k) only."""
    rng = np.random.default_rng([seed, zlib.crc32(source.encode()), k])
    x, y, side = square_box(photo.size, crop_name)
    new_side = side * rng.uniform(1 - BOX_SCALE, 1 + BOX_SCALE)
    cx, cy = (x + side / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * side,
              y + side / 2 + rng.uniform(-BOX_SHIFT, BOX_SHIFT) * side)
    box = tuple(int(round(v)) for v in (cx - new_side / 2, cy - new_side / 2, cx + new_side / 2, cy + new_side / 2))
    crop = photo.crop(box).resize((size, size), Image.Resampling.BILINEAR)  # PIL pads beyond the photo with black
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / 255.0


def box_crops(folder: Path, judged_sources: list[str], size: int, n: int, seed: int) -> InputSet:
    """``n`` jittered boxes around the judged crops ``judged_sources`` ("photo.jpg:centre") of the photos in
    ``folder``, taken in turn (row i is box i // m of crop i % m): a longer set starts with a shorter one's rows."""
    files = sorted({s.split(":", 1)[0] for s in judged_sources})
    photos = {f: read_rgb(Path(folder) / f, "image", ExportError) for f in files}
    m = len(judged_sources)
    rows = [(judged_sources[i % m], i // m) for i in range(n)]
    images = [box_crop(photos[src.split(":", 1)[0]], src.split(":", 1)[1], size, seed, src, k) for src, k in rows]
    return InputSet(np.stack(images) if images else np.zeros((0, 3, size, size), np.float32),
                    tuple(f"{src}:{BOX_TAG}{k}" for src, k in rows))


def judged_crops(inputs: InputSet, judged: np.ndarray) -> list[str]:
    """The judged rows' own crops of photos (not the boxes drawn around them), in the set's order."""
    return [s for s, j in zip(inputs.sources, judged) if j and s.count(":") == 1 and s.split(":", 1)[0]
            in inputs.photo_digests]


def most_judged_rows(inputs: InputSet, judged: np.ndarray, cap: int) -> int:
    """The most rows a borderline cost of the ``judged`` rows is judged on: ``cap`` for the synthetic task's
    images, MAX_ROWS_PER_JUDGED_CROP per judged crop (at most ``cap``) for photos."""
    if inputs.judged_group == "synthetic":
        return cap
    return min(cap, MAX_ROWS_PER_JUDGED_CROP * len(judged_crops(inputs, judged)))


def more_judged_images(spec: ModelSpec, inputs: InputSet, n: int, seed: int, judged: np.ndarray) -> InputSet:
    """``n`` more images of the kind the ``judged`` rows of ``inputs`` are: the synthetic evaluation images
    that follow the set's own, or jittered detector boxes around the judged photo crops (each row judged like
    the photo it is cut from, so the photos a calibrated file must not be judged on stay out, and counted as
    that photo: InputSet.units). What a borderline cost is judged on (exporters/pipeline/export_run.py); `verify`
    rebuilds the same rows from the same record."""
    if inputs.judged_group == "synthetic":
        first = int(inputs.group_masks().get("synthetic", np.zeros(0, bool)).sum())
        return synthetic_inputs(spec, n, seed, start=first)
    crops = judged_crops(inputs, judged)
    if not crops or inputs.photos_dir is None:
        raise ExportError("no judged photo to draw more images from")
    more = box_crops(inputs.photos_dir, crops, spec.input_size, n, seed)
    return InputSet(more.images, more.sources, inputs.photo_digests, inputs.photos_dir)


def parity_inputs(size: int, images_dir: Path | None = None, seed: int = 0,
                  synthetic_spec: ModelSpec | None = None, synthetic_n: int = NUM_SYNTHETIC_INPUTS) -> InputSet:
    """The fixed verification set: every photo crop, NUM_RANDOM_INPUTS seeded noise images, then
    ``synthetic_n`` synthetic evaluation images when ``synthetic_spec`` is given."""
    photos = load_images(images_dir or DEFAULT_IMAGES_DIR, size)
    parts = [photos, random_inputs(NUM_RANDOM_INPUTS, size, seed)]
    if synthetic_spec is not None:
        parts.append(synthetic_inputs(synthetic_spec, synthetic_n, seed))
    return InputSet(np.concatenate([p.images for p in parts]), sum((p.sources for p in parts), ()),
                    photos.photo_digests, photos.photos_dir)


def inputs_for(loaded: LoadedCheckpoint, images_dir: Path | None = None, seed: int = 0,
               synthetic_n: int = NUM_SYNTHETIC_INPUTS) -> InputSet:
    """``parity_inputs`` for a checkpoint: weights trained on the synthetic task also get its images."""
    return parity_inputs(loaded.spec.input_size, images_dir, seed, loaded.spec if loaded.trained_synthetic else None,
                         synthetic_n)


def recorded_inputs(loaded: LoadedCheckpoint, record: dict, images_dir: Path | None = None,
                    synthetic_n: int | None = None) -> InputSet:
    """The verification set an export recorded (manifest ``verification``), rebuilt and checked: its
    photos must still be in their folder with the same content. ``images_dir`` replaces the folder
    (a moved copy is fine; other photos are refused -- pass them as ``--images`` to a new export).
    ``synthetic_n`` asks for more synthetic-task images than the export used (the same first ones)."""
    folder = Path(images_dir or record["images_dir"])
    wanted = {p["file"]: p["content_sha256"] for p in record["photos"]}
    missing = [f for f in wanted if not (folder / f).is_file()]
    changed = [f for f in wanted if f not in missing and content_digest(read_rgb(folder / f)) != wanted[f]]
    if missing or changed:
        problems = [f"{len(names)} {what} ({few(names)})" for what, names in (("missing", missing),
                                                                          ("changed", changed)) if names]
        raise ExportError(f"the {len(wanted)} verification photos this export was judged on are not in {folder} as "
                          f"they were: {'; '.join(problems)}. Point --images at the folder they moved to, or "
                          "re-export")
    n = record["synthetic"] if synthetic_n is None else max(synthetic_n, record["synthetic"])
    inputs = parity_inputs(loaded.spec.input_size, folder, record["seed"], loaded.spec if n else None, n)
    if set(inputs.photo_digests) != set(wanted):
        extra = sorted(set(inputs.photo_digests) - set(wanted))
        raise ExportError(f"{folder} holds {len(extra)} images the export was not judged on ({few(extra)}); keep "
                          "the verification folder as it was")
    return inputs
