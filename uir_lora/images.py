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


# Pillow decodes 16-bit colour PNGs to 8 bits (high bytes only). Decoding the rows again with these rawmodes
# recovers the rest: the little-endian unpackers pick each big-endian sample's low byte, and 16-bit grey+alpha
# read as 8-bit RGBA yields the raw byte pairs (L high, L low, A high, A low).
_PNG16_SECOND_PASS = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def _png16_rawmode(image: Image.Image) -> str | None:
    """The rawmode of a 16-bit PNG that Pillow would truncate to 8 bits, else None (call before load())."""
    if image.format != "PNG" or len(image.tile) != 1:
        return None
    rawmode = image.tile[0][3]
    return rawmode if isinstance(rawmode, str) and rawmode in _PNG16_SECOND_PASS else None


def _png16_samples(path: Path, rawmode: str, high: np.ndarray) -> np.ndarray:
    """Full 16-bit samples of a PNG whose first decode (``high``) kept only the high bytes."""
    with Image.open(path) as image:
        image.tile = [(*image.tile[0][:3], _PNG16_SECOND_PASS[rawmode])]  # plain tuple: Pillow < 11 has no _Tile
        image.load()
        low = np.asarray(image)
    if rawmode == "LA;16B":  # alpha is dropped by array_to_tensor anyway
        return (low[..., 0].astype(np.uint16) << 8) | low[..., 1]
    return (high.astype(np.uint16) << 8) | low


def load_image(path: str | Path) -> torch.Tensor:
    """Read any image file as [1,3,H,W] float32 in 0..1; 16-bit PNGs keep their full precision."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            png16 = _png16_rawmode(image)
            image.load()
            if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            array = np.asarray(image)
        if png16:
            array = _png16_samples(path, png16, array)
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
