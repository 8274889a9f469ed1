"""Reading and writing image files safely: any mode in, RGB float out; atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Image.MAX_IMAGE_PIXELS = 200_000_000  # decompression-bomb guard, still above 100 MP photos


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxW, HxWx1/3/4 of uint8, uint16 or float -> [1,3,H,W] float32 in 0..1 (alpha dropped)."""
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    elif array.dtype in (np.int32, np.int64):  # PIL "I" mode (16-bit PNG) arrives as int32
        data = array.astype(np.float32) / (65535.0 if array.max(initial=0) > 255 else 255.0)
    else:
        data = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"unsupported image array shape {array.shape}; expected HxW or HxWxC with C in 1..4")
    if data.shape[2] in (1, 2):
        data = np.repeat(data[..., :1], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(data[..., :3])).permute(2, 0, 1)[None].clamp(0, 1)


def load_image(path: str | Path) -> torch.Tensor:
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            array = np.asarray(image)
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); expected one of {', '.join(IMAGE_SUFFIXES)}") from exc
    return array_to_tensor(array)


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """[1,3,H,W] or [3,H,W] in 0..1 -> HxWx3 uint8, rounded (not truncated)."""
    image = image[0] if image.ndim == 4 else image
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write through a temporary file and rename, so an interrupted write never leaves a broken file."""
    path = Path(path)
    array = image if isinstance(image, np.ndarray) else tensor_to_uint8(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=suffix, delete=False) as tmp:
        pass
    try:
        Image.fromarray(array).save(tmp.name, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        os.replace(tmp.name, path)
    except BaseException:  # also KeyboardInterrupt: never leave the half-written temp file behind
        os.unlink(tmp.name)
        raise
    return path
