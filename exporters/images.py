"""Parity inputs: real photos as square crops resized to the model input, plus seeded noise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import ExportError

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Sample photos shipped with the project (MIT, see data/people/NOTICE.md).
DEFAULT_IMAGES_DIR = REPO_ROOT / "data" / "people"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
NUM_RANDOM_INPUTS = 3
_WIDE = 1.3  # aspect ratio past which a photo gives left/centre/right crops


@dataclass(frozen=True)
class InputSet:
    """(N, 3, S, S) float32 RGB in [0, 1], with where each row came from."""

    images: np.ndarray
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.sources)


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
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"images folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"images folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays, sources = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise ExportError(f"image {path} cannot be read: {exc}") from None
        for crop_name, crop in square_crops(rgb):
            resized = crop.resize((size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            sources.append(f"{path.name}:{crop_name}")
    return InputSet(np.stack(arrays), tuple(sources))


def random_inputs(n: int, size: int, seed: int) -> InputSet:
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size), dtype=np.float32)
    return InputSet(images, tuple(f"random:seed{seed}:{i}" for i in range(n)))


def parity_inputs(size: int, images_dir: Path | None = None, seed: int = 0) -> InputSet:
    """The fixed verification set: every photo crop, then NUM_RANDOM_INPUTS seeded noise images."""
    photos = load_images(images_dir or DEFAULT_IMAGES_DIR, size)
    noise = random_inputs(NUM_RANDOM_INPUTS, size, seed)
    return InputSet(np.concatenate([photos.images, noise.images]), photos.sources + noise.sources)
