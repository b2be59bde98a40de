"""Deterministic calibration sets for integer quantisation (the representative dataset).

Static int8 quantisation fixes every activation's range from the activations seen on a few dozen
inputs. The set must look like what the app feeds (person crops, RGB in [0, 1]) and must be
*reproducible*: the same arguments give byte-identical images, so the sha256 recorded in the
manifest identifies the set and a re-export gives the same quantised model.

Two sources:

- image files (a folder or a list of paths; default the people photos): each calibration image is
  a seeded random square crop (scale), optionally flipped, brightness-jittered and resized to S;
- a callable ``fn(n) -> images`` that renders synthetic images (e.g. the synthetic task's TRAIN
  split), used as is or with the same augmentation.

Calibration and evaluation images must be disjoint: this module never looks at evaluation data,
the caller picks the source and the description says which it was. The source must match what the
weights see: for the synthetic-task reference weights, 64 TRAIN-split images give 0.26-0.37 px p99
(int8 body, XS/S, on EVAL-split images), augmented people photos 1.2 px, and augmenting the TRAIN
images (zoomed crops, brightness) 0.67 px -- the photos are the right source for released weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import ExportError
from common.images import content_digest, list_images, read_rgb
from common.tables import few
from judging.inputs import DEFAULT_IMAGES_DIR, InputSet
from judging.judged_rows import disjoint_photos
from models.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

DEFAULT_SIZE = 64  # images; ranges of a ReLU network settle after a few dozen crops
ImageSource = Path | str | Sequence[Path | str] | Callable[[int], np.ndarray]


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the seeded augmentation. Mild on purpose: calibration should cover the inputs
    the app sends (a person crop), not stretch activation ranges with unrealistic images."""

    min_scale: float = 0.6  # side of the square crop / shorter side of the photo
    max_scale: float = 1.0
    flip_prob: float = 0.5
    brightness: tuple[float, float] = (0.75, 1.25)  # multiplicative, then clipped to [0, 1]


NO_AUGMENTATION = None
DEFAULT_AUGMENTATION = Augmentation()


@dataclass(frozen=True)
class CalibrationSet:
    """(N, S, S, 3) float32 NHWC RGB in [0, 1] (the TFLite input contract), with its identity."""

    images: np.ndarray
    sha256: str  # of images.tobytes() (C order, float32 little-endian)
    source: str  # e.g. "files:data/people" or "callable:synthetic TRAIN split"
    description: str  # files used, seed, augmentation: enough to rebuild the set
    #: content digests (common.images.content_digest) of the image files it was cropped from
    file_digests: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def signature_data(self, input_name: str = "image",
                       signature: str = "serving_default") -> dict[str, list[dict[str, np.ndarray]]]:
        """ai-edge-quantizer's calibration format: one 1xSxSx3 sample per entry (batch 1 model)."""
        return {signature: [{input_name: img[None]} for img in self.images]}

    def to_manifest(self) -> dict[str, object]:
        n, s, _, c = self.images.shape
        return {"n": n, "shape": [n, s, s, c], "sha256": self.sha256, "source": self.source,
                "description": self.description, "file_content_sha256": sorted(set(self.file_digests))}


def digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest()


def _augment(image: Image.Image, size: int, rng: np.random.Generator, aug: Augmentation | None) -> np.ndarray:
    """One seeded crop -> (S, S, 3) float32 in [0, 1]."""
    w, h = image.size
    if aug is None:
        side = min(w, h)
        x0, y0, flip, gain = (w - side) // 2, (h - side) // 2, False, 1.0
    else:
        # Draw every random number even when unused, so one image's draw never shifts the next.
        scale, fx, fy, u, gain = rng.uniform(aug.min_scale, aug.max_scale), rng.random(), rng.random(), \
            rng.random(), rng.uniform(*aug.brightness)
        side = max(1, round(min(w, h) * scale))
        x0, y0, flip = int(fx * (w - side)), int(fy * (h - side)), u < aug.flip_prob
    crop = image.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.clip(np.asarray(crop, dtype=np.float32) / 255.0 * gain, 0.0, 1.0)


def _list_files(source: Path | str | Sequence[Path | str]) -> list[Path]:
    if isinstance(source, (str, Path)):
        return list_images(Path(source), "calibration", ExportError)
    if not source:
        raise ExportError("calibration source holds no images (an empty list)")
    return [Path(p) for p in source]


def from_files(source: Path | str | Sequence[Path | str] = DEFAULT_IMAGES_DIR, size: int = 256, n: int = DEFAULT_SIZE,
               seed: int = 0, augmentation: Augmentation | None = DEFAULT_AUGMENTATION) -> CalibrationSet:
    """n augmented crops cycling over the (sorted) files; deterministic in every argument."""
    files = _list_files(source)
    photos = [read_rgb(path, "calibration image", ExportError) for path in files]
    digests = tuple(content_digest(p) for p in photos)
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, size]))
    images = np.stack([_augment(photos[i % len(photos)], size, rng, augmentation) for i in range(n)])
    where = files[0].parent if isinstance(source, (str, Path)) else "list"
    desc = (f"{n} crops of {len(files)} files [{', '.join(p.name for p in files)}] in {where}, seed {seed}, "
            f"augmentation {augmentation}")
    return _finish(images, f"files:{where}", desc, digests)


def from_callable(render: Callable[[int], np.ndarray], size: int = 256, n: int = DEFAULT_SIZE, seed: int = 0,
                  augmentation: Augmentation | None = NO_AUGMENTATION, name: str = "callable") -> CalibrationSet:
    """``render(n)`` gives (n, 3, S, S) or (n, S, S, 3) images in [0, 1] (float) or 0..255 (uint8).

    The callable owns its own determinism (e.g. the synthetic task's (seed, split, index)); the
    optional augmentation here is seeded by ``seed``.
    """
    raw = np.asarray(render(n))
    if raw.ndim != 4 or 3 not in (raw.shape[1], raw.shape[-1]):
        raise ExportError(f"calibration callable {name} returned shape {raw.shape}, "
                          "expected (n, 3, S, S) or (n, S, S, 3)")
    nhwc = raw if raw.shape[-1] == 3 else raw.transpose(0, 2, 3, 1)
    nhwc = nhwc.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else nhwc.astype(np.float32)
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, size]))
    if augmentation is not None or nhwc.shape[1:3] != (size, size):
        as_pil = [Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8)) for x in nhwc]
        nhwc = np.stack([_augment(img, size, rng, augmentation) for img in as_pil])
    desc = f"{len(nhwc)} images from {name}, seed {seed}, augmentation {augmentation}"
    return _finish(nhwc, f"callable:{name}", desc)


def build_calibration_set(source: ImageSource = DEFAULT_IMAGES_DIR, size: int = 256, n: int = DEFAULT_SIZE,
                          seed: int = 0, augmentation: Augmentation | None = DEFAULT_AUGMENTATION,
                          name: str = "callable") -> CalibrationSet:
    """Dispatch on the source: a callable renders images, anything else names image files."""
    if callable(source):
        return from_callable(source, size, n, seed, augmentation, name)
    return from_files(source, size, n, seed, augmentation)


def _finish(images: np.ndarray, source: str, description: str, file_digests: tuple[str, ...] = ()) -> CalibrationSet:
    images = np.ascontiguousarray(images, dtype=np.float32)
    if not (np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0):
        raise ExportError(f"calibration images from {source} are not finite values in [0, 1]")
    result = CalibrationSet(images, digest(images), source, description, file_digests)
    log.debug("calibration set: %d x %s from %s, sha256 %s", len(images), images.shape[1:], source, result.sha256[:12])
    return result


# ---- which set, and which evaluation inputs stay disjoint from it ------------------------------
@dataclass(frozen=True)
class CalibrationChoice:
    """The calibration set an export uses, and the verification rows int8 artifacts are judged on."""

    calibration: CalibrationSet
    judged: np.ndarray  # boolean row mask over the verification InputSet
    judged_description: str
    judged_sources: tuple[str, ...]  # the verification inputs of that mask, by source name
    judged_group: str | None = None  # set when every input of a group qualifies (any number of them)

    def to_manifest(self) -> dict[str, object]:
        return {**self.calibration.to_manifest(), "int8_judged_on": self.judged_description,
                "int8_judged_group": self.judged_group, "int8_judged_sources": list(self.judged_sources)}


def choose_calibration(loaded: LoadedCheckpoint, inputs: InputSet, calib_dir: Path | None = None,
                       seed: int = 0, n: int = DEFAULT_SIZE) -> CalibrationChoice:
    """The representative dataset for ``loaded`` and the disjoint inputs its int8 artifacts are judged on.

    - ``calib_dir`` given: crops of its photos (augmented); judged on the verification photos whose
      picture is not among them (compared by decoded content, not by file name) -- none left is an
      error, not a silent overlap;
    - weights trained on the synthetic task: that task's TRAIN split (never in the verification set,
      which holds EVAL-split images), judged on the synthetic images;
    - otherwise the people photos split by file: every other file calibrates, the rest are judged.
    """
    spec = loaded.spec
    groups = inputs.group_masks()
    if calib_dir is None and inputs.judged_group == "synthetic":
        from models.synthetic.task import TRAIN, render_batch

        calibration = from_callable(lambda k: render_batch(spec, seed, 0, k, TRAIN).images.numpy(), spec.input_size,
                                    n, seed, NO_AUGMENTATION, f"synthetic task TRAIN split (seed {seed})")
        return _choice(calibration, groups["synthetic"], inputs,
                       "synthetic task EVAL-split images (disjoint from the TRAIN split by seed)", "synthetic")
    if calib_dir is not None:
        files = _list_files(calib_dir)
    else:
        files = _list_files(DEFAULT_IMAGES_DIR)[::2]
    calibration = from_files(files, spec.input_size, n, seed)
    judged = disjoint_photos(inputs, set(calibration.file_digests))
    if not judged.any():
        photos = sorted(inputs.photo_digests)
        raise ExportError(f"the {len(files)} calibration images contain every one of the {len(photos)} verification "
                          f"photos ({few(photos)}; compared by content): int8 would be judged on the images it was "
                          "calibrated on; pass --calib DIR or --images DIR with other photos")
    judged_files = sorted({s.split(":", 1)[0] for s, j in zip(inputs.sources, judged) if j})
    return _choice(calibration, judged, inputs,
                   f"verification photos not used for calibration: {', '.join(judged_files)}")


def _choice(calibration: CalibrationSet, judged: np.ndarray, inputs: InputSet, description: str,
            group: str | None = None) -> CalibrationChoice:
    return CalibrationChoice(calibration, judged, description, tuple(s for s, j in zip(inputs.sources, judged) if j),
                             group)
