"""The one image-folder reader: which files are images, and decoding one to RGB with a clear error."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import ConvNeXtPoseError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(folder: Path, what: str = "images", error: type[ConvNeXtPoseError] = ConvNeXtPoseError) -> list[Path]:
    """Image files of ``folder`` in sorted order; ``what`` names the folder's role in errors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise error(f"{what} folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise error(f"{what} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


#: Smallest side a crop of a person can usefully have, and the most pixels a photo may declare (an 8K
#: photo is 33 M; PIL's own decompression-bomb limit is 89 M).
MIN_SIDE = 32
MAX_PIXELS = 50_000_000


def read_rgb(path: Path, what: str = "image", error: type[ConvNeXtPoseError] = ConvNeXtPoseError) -> Image.Image:
    """The decoded picture as 8-bit RGB, upright (EXIF orientation applied, as phones display it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise error(f"{what} {path} declares {w}x{h} pixels ({w * h / 1e6:.0f} M): refused, more than "
                                f"{MAX_PIXELS / 1e6:.0f} M (a decompression bomb, or crop the photo first)")
                img = ImageOps.exif_transpose(img)
                if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grey: keep the high byte, not clip
                    img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
                rgb = img.convert("RGB")
                rgb.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise error(f"{what} {path}: refused, it declares more pixels than any photo (a decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from None
    if min(rgb.size) < MIN_SIDE:
        raise error(f"{what} {path} is {rgb.width}x{rgb.height} pixels: too small to hold a person (at least "
                    f"{MIN_SIDE} a side)")
    return rgb


def content_digest(image: Image.Image) -> str:
    """sha256 of the decoded pixels and size: equal for the same picture under any name or encoding."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
