"""The one image-folder reader: which files are images, and decoding one to RGB with a clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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


def read_rgb(path: Path, what: str = "image", error: type[ConvNeXtPoseError] = ConvNeXtPoseError) -> Image.Image:
    """The decoded image as RGB (loaded, file closed)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}") from None


def content_digest(image: Image.Image) -> str:
    """sha256 of the decoded pixels and size: equal for the same picture under any name or encoding."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
