"""Clean evaluation photos: any folder, or the default held-out set from registry packages.

The default set (offline, pinned in the ``eval`` extra): scikit-image's six colour scenes,
scikit-learn's two sample photos, and the training code's fixed validation split (9 tiktok photos
never used for training; uir_lora/lab/train/data.py). Every image is centre-cropped to a square.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError
from ...images import IMAGE_SUFFIXES, array_to_tensor, load_image

log = logging.getLogger(__name__)
DEFAULT = "default"


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² square (smaller when the image is; sides kept even for the backbone)."""
    height, width = image.shape[-2:]
    side = min(size, height, width)
    side -= side % 2
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top : top + side, left : left + side].contiguous()


def _skimage_photos() -> list[tuple[str, Callable[[], np.ndarray]]]:
    from skimage import data

    return [("astronaut", data.astronaut), ("coffee", data.coffee), ("chelsea", data.chelsea),
            ("rocket", data.rocket), ("motorcycle_left", lambda: data.stereo_motorcycle()[0]),
            ("hubble", data.hubble_deep_field)]


def _sklearn_photos() -> list[tuple[str, Callable[[], np.ndarray]]]:
    from sklearn.datasets import load_sample_image

    return [(name.removesuffix(".jpg"), lambda n=name: load_sample_image(n)) for name in ("china.jpg", "flower.jpg")]


def _validation_photos() -> list[tuple[str, torch.Tensor]]:
    """The training code's held-out split (cached under data/); empty when it cannot be built."""
    try:
        from ..train import data
    except ImportError:
        return []
    try:
        images = data.load_validation_images()
    except (InputError, ImportError, OSError) as exc:
        log.warning("validation split unavailable (%s); evaluating without it", exc)
        return []
    return [(f"val_{Path(name).stem}", image[None]) for name, image in zip(data.VALIDATION_PHOTOS, images)]


def scene_photos() -> list[tuple[str, torch.Tensor]]:
    """The 8 scikit-image and scikit-learn photos, whole, at native size ([1,3,H,W], 300-1000 px): scenes
    unlike the indoor training photos (portrait, cat, rocket, street, flower, starfield)."""
    try:
        loaders = _skimage_photos() + _sklearn_photos()
    except ImportError as exc:
        raise InputError("the default evaluation set needs: pip install -e .[eval]") from exc
    return [(name, array_to_tensor(load())) for name, load in loaders]


def default_images(size: int = 256, max_images: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """scikit-image + scikit-learn photos, then the validation split; centre crops of ``size``."""
    images = scene_photos() + _validation_photos()
    return [(name, centre_crop(image, size)) for name, image in images[:max_images]]


def folder_images(folder: Path, size: int = 256, max_images: int | None = None) -> list[tuple[str, torch.Tensor]]:
    """Every image file in ``folder`` (sorted by name), centre-cropped."""
    files = [p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of clean photos "
                         f"or 'default'")
    return [(p.stem, centre_crop(load_image(p), size)) for p in files[:max_images]]


def evaluation_images(source: str | Path | None, size: int = 256, max_images: int | None = None
                      ) -> list[tuple[str, torch.Tensor]]:
    """``None`` or "default": the default set; otherwise a folder of clean photos."""
    if size < 64:
        raise InputError(f"--size must be at least 64 px (the router's encoder needs it), got {size}")
    if source is None or str(source) == DEFAULT:
        return default_images(size, max_images)
    path = Path(source)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder; give a folder of clean photos or 'default'")
    return folder_images(path, size, max_images)
