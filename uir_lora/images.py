"""Reading and writing image files safely: any mode in, RGB float out; atomic writes."""

from __future__ import annotations

import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, check_int, parse_number
from .paths import give_default_mode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Image.MAX_IMAGE_PIXELS = 200_000_000  # decompression-bomb guard, still above 100 MP photos
HARD_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS
"""Pillow refuses larger images as decompression bombs before our budget is consulted."""
DEFAULT_PIXEL_BUDGET = 120_000_000
"""Pixels one image may have by default: above 100 MP photos; a restore holds several float copies of it."""
PIXEL_BUDGET_ENV = "UIR_LORA_MAX_PIXELS"
TIFF_BITS_PER_SAMPLE = 258


def _white_level(array: np.ndarray) -> float:
    """The sample value that means full white: from the integer type, or the nominal range a float image uses."""
    if array.dtype.kind == "u" and array.dtype.itemsize == 1:
        return 255.0
    if array.dtype.kind in "ui":  # uint16, and PIL's "I" mode (16-bit PNG, 32-bit TIFF) as int32
        peak = float(array.max(initial=0))
        return 65535.0 if peak <= 65535 else float(np.iinfo(array.dtype).max)
    finite = array[np.isfinite(array)]
    peak = float(finite.max(initial=0.0)) if finite.size else 0.0
    # float files come as 0..1, or with 8- or 16-bit sample values (scanners, HDR merges): scaled, not clipped
    return next((level for level in (1.0, 255.0, 65535.0) if peak <= level), peak)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxW, HxWx1/3/4 of uint8, uint16, int or float -> [1,3,H,W] float32 in 0..1 (alpha dropped)."""
    return split_alpha(array)[0]


def split_alpha(array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """HxW or HxWxC (C in 1..4) -> ([1,3,H,W] colour, [1,1,H,W] alpha or None), both float32 in 0..1.

    Integer samples are divided by their type's white (255, 65535); float samples by the nominal range
    they use (1, 255 or 65535), so 16-bit and float files keep their tones instead of clipping to white.
    """
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # big-endian "I;16B" samples
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"unsupported image array shape {array.shape}; expected HxW or HxWxC with C in 1..4")
    data = array.astype(np.float32) / _white_level(array)
    data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=0.0)
    colour = data[..., :3] if data.shape[2] >= 3 else np.repeat(data[..., :1], 3, axis=2)
    alpha = data[..., -1:] if data.shape[2] in (2, 4) else None

    def to_tensor(part: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(part)).permute(2, 0, 1)[None].clamp(0, 1)

    return to_tensor(colour), None if alpha is None else to_tensor(alpha)


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
        low = np.asarray(ImageOps.exif_transpose(image))
    if rawmode == "LA;16B":  # byte pairs (L high, L low, A high, A low) -> grey and alpha
        pairs = low.astype(np.uint16)
        return np.stack(((pairs[..., 0] << 8) | pairs[..., 1], (pairs[..., 2] << 8) | pairs[..., 3]), axis=-1)
    return (high.astype(np.uint16) << 8) | low


@dataclass(frozen=True)
class LoadedImage:
    """An image file as the engine takes it, plus what the engine does not restore but the file had."""

    image: torch.Tensor
    """[1,3,H,W] float32 in 0..1, upright (EXIF orientation applied)."""
    alpha: torch.Tensor | None
    """[1,1,H,W] float32 in 0..1, or None: passed through unchanged to the saved result."""
    frames: int = 1
    """Frames in the file (animated GIF/PNG/WebP, multi-page TIFF); only the first is read."""


def pixel_budget(max_pixels: int | None = None) -> int:
    """The most pixels one image may have: ``max_pixels``, else $UIR_LORA_MAX_PIXELS, else the default."""
    if max_pixels is None:
        text = os.environ.get(PIXEL_BUDGET_ENV, "").strip()
        if not text:
            return DEFAULT_PIXEL_BUDGET
        max_pixels = parse_number(PIXEL_BUDGET_ENV, text, whole=True)
    return check_int("max_pixels", max_pixels, 1, HARD_PIXEL_LIMIT)


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a plain file before opening it: opening a FIFO blocks until someone writes to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a folder, not an image file; rename it or move it out of the input folder")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InputError(f"{path}: is {kind}, not a regular file; only image files are read")


def _check_budget(path: Path, width: int, height: int, budget: int) -> None:
    pixels = width * height
    if pixels > budget:
        raise InputError(f"{path}: {width}x{height} = {pixels:,} pixels, over the pixel budget of {budget:,} "
                         f"(decoding it would take ~{pixels * 16 / 2**30:.1f} GB); raise the budget with --max-pixels "
                         f"or the {PIXEL_BUDGET_ENV} environment variable (at most {HARD_PIXEL_LIMIT:,}), "
                         f"or downscale the image")


def read_image(path: str | Path, *, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file: colour, alpha and frame count; refuses special files and images over the budget.

    The size is checked from the header before any pixel is decoded (Pillow's open is lazy).
    """
    path = Path(path)
    budget = pixel_budget(max_pixels)
    _check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget above decides
            with Image.open(path) as image:
                _check_budget(path, image.width, image.height, budget)
                frames = getattr(image, "n_frames", 1)
                png16 = _png16_rawmode(image)
                if _needs_tifffile(image):
                    array = _tiff_fallback(path, None)[0]
                else:
                    image.load()
                    upright = ImageOps.exif_transpose(image)
                    if upright.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                        has_alpha = "A" in upright.mode or "transparency" in upright.info
                        upright = upright.convert("RGBA" if has_alpha else "RGB")
                    array = np.asarray(upright)
        if png16:
            array = _png16_samples(path, png16, array)
    except InputError:  # a ValueError too: keep its message
        raise
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: not a readable image ({exc}); images over {HARD_PIXEL_LIMIT / 1e6:.0f} MP are "
                         f"refused as decompression bombs") from exc
    except UnidentifiedImageError as exc:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"{path}: not a readable image ({exc}); expected one of {', '.join(IMAGE_SUFFIXES)}"
                             ) from exc
        array, frames = _tiff_fallback(path, budget)  # float colour TIFFs, which Pillow cannot open
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); expected one of {', '.join(IMAGE_SUFFIXES)}") from exc
    colour, alpha = split_alpha(array)
    return LoadedImage(colour, alpha, frames)


def load_image(path: str | Path, *, max_pixels: int | None = None) -> torch.Tensor:
    """Read any image file as [1,3,H,W] float32 in 0..1; 16-bit PNGs keep their full precision."""
    return read_image(path, max_pixels=max_pixels).image


def _needs_tifffile(image: Image.Image) -> bool:
    """Colour TIFFs with more than 8 bits per sample: Pillow would decode them to 8 bits."""
    if image.format != "TIFF" or image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return False
    bits = image.tag_v2.get(TIFF_BITS_PER_SAMPLE, (8,))
    return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def _tiff_fallback(path: Path, budget: int | None) -> tuple[np.ndarray, int]:
    """(first page at full sample depth, page count), read by tifffile; the budget is checked before decoding."""
    import tifffile  # only for TIFFs Pillow would truncate or cannot open

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            if budget is not None:
                _check_budget(path, page.imagewidth, page.imagelength, budget)
            array = page.asarray()
            if page.axes.startswith("S"):  # planar (one plane per channel) -> interleaved
                array = np.moveaxis(array, 0, -1)
            return array, len(tiff.pages)
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); expected one of {', '.join(IMAGE_SUFFIXES)}"
                         ) from exc


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """[1,3,H,W] or [3,H,W] in 0..1 -> HxWx3 uint8, rounded (not truncated)."""
    image = image[0] if image.ndim == 4 else image
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")


def save_image(image: torch.Tensor | np.ndarray, path: str | Path, alpha: torch.Tensor | None = None) -> Path:
    """Write through a temporary file and rename, so an interrupted write never leaves a broken file.

    ``alpha`` ([1,1,H,W] in 0..1) is written as the image's alpha channel where the format has one.
    """
    path = Path(path)
    array = image if isinstance(image, np.ndarray) else tensor_to_uint8(image)
    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ".png"
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    if alpha is not None and fmt in ALPHA_FORMATS:
        array = np.concatenate((array, tensor_to_uint8(alpha.expand(-1, 3, -1, -1))[..., :1]), axis=2)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: cannot make the folder {path.parent}, a file is in the way; "
                         f"choose another output folder") from None
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem[:32]}.", suffix=suffix,
                                     delete=False) as tmp:
        pass
    try:
        Image.fromarray(array).save(tmp.name, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        give_default_mode(tmp.name)
        os.replace(tmp.name, path)
    except BaseException:  # also KeyboardInterrupt: never leave the half-written temp file behind
        os.unlink(tmp.name)
        raise
    return path


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` that overlap by >= ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))
