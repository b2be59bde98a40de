"""Backgrounds for the synthetic pose task: photo crops with colour jitter, procedural textures, shapes."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.images import list_images, read_rgb
from common.paths import SAMPLE_PHOTOS_DIR

#: Real photos (MIT, from the official repository; see its NOTICE.md), cropped and jittered.
PHOTO_DIR = SAMPLE_PHOTOS_DIR


@lru_cache(maxsize=4)
def _photos(photo_dir: str) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(read_rgb(f)) for f in list_images(Path(photo_dir), "background photos"))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) in [0, 1]: bilinearly upsampled random grid -- cheap low-frequency texture."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _photo_background(rng: np.random.Generator, size: int, photos: tuple[np.ndarray, ...]) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    gain = rng.uniform(0.6, 1.4, 3)  # colour jitter: per-channel gain, global brightness shift
    return img * gain + rng.uniform(-40, 40)


def _procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = random_colour(rng), random_colour(rng)
    kind = rng.integers(4)
    if kind == 0:  # multi-octave noise
        t = (0.6 * _smooth_noise(rng, size, int(rng.integers(2, 6)))
             + 0.4 * _smooth_noise(rng, size, int(rng.integers(8, 40))))
    elif kind == 1:  # stripes / checker
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 20) * 2 * np.pi / size
        t = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy))
        if rng.random() < 0.5:
            t = t * (0.5 + 0.5 * np.sin(freq * (-np.sin(ang) * xx + np.cos(ang) * yy)))
    elif kind == 2:  # linear gradient
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        ang = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5)), 0, 1)
    else:  # flat with a little noise
        t = 0.15 * _smooth_noise(rng, size, 16)
    return a + (b - a) * t[..., None]


def _distractors(rng: np.random.Generator, img: Image.Image) -> None:
    """Random shapes, some limb-like, so the network must find the figure, not just 'something'."""
    draw = ImageDraw.Draw(img)
    size = img.size[0]
    for _ in range(int(rng.integers(0, 6))):
        colour = tuple(int(c) for c in random_colour(rng))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.03, 0.3, 2) * size
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            width = int(max(1, size * rng.uniform(0.01, 0.04)))
            draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h], fill=colour, width=width)


def render_background(
    rng: np.random.Generator, size: int, photo_prob: float, distractor_prob: float, photo_dir: Path = PHOTO_DIR
) -> np.ndarray:
    """(size, size, 3) uint8: a jittered photo crop (``photo_prob``) or a procedural texture, maybe with shapes."""
    photos = _photos(str(photo_dir))
    use_photo = photos and rng.random() < photo_prob
    img = _photo_background(rng, size, photos) if use_photo else _procedural_background(rng, size)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < distractor_prob:
        _distractors(rng, pil)
    return np.asarray(pil)
