"""Labelled router examples: seeded crops of real photos, degraded per class, encoded and cached.

A router class is a LoRA name: a kind of ``uir_lora.degrade.KINDS`` (synthesised on the fly) or
``clean`` (the undegraded crop). Features are cached as safetensors (no pickles) keyed by every
input that changes them, because encoding is the slow part.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...images import load_image
from ...router.encoder import DegradationEncoder

CLEAN = "clean"
PHOTO_WIDTHS = (640, 960)  # the tiktok photos are 1920 px wide with JPEG artefacts: use them at x1/3, x1/2
FRAME_SIDES = (224, 4096)
"""Shorter sides of the photos a router crop is taken to be a window of (see ``at_photo_scale``): up to
a 6000 x 4000 camera photo. Drops and flakes scale with the photo: on a photo larger than any in training
they are larger than any the router saw, and it sends them elsewhere (snow to haze, raindrops to clean;
docs/router.md)."""
DegradeFn = Callable[..., torch.Tensor]
MIN_STD = 1e-4  # features that never vary must not blow up the standardisation


@dataclass
class Standardisation:
    """z = (raw - mean) / std, the bank's standardisation of router features (cosine and presence routers)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> Standardisation:
        return cls(features.mean(dim=0), features.std(dim=0).clamp_min(MIN_STD))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def at_photo_scale(degrade: DegradeFn, sides: tuple[int, int] = FRAME_SIDES) -> DegradeFn:
    """``uir_lora.degrade.degrade`` on a crop as a window of a photo whose shorter side is drawn
    log-uniformly from ``sides`` (never below the crop's). Raindrops, snowflakes and the haze depth
    field scale with the photo, and the router sees photos at their native resolution through
    224 px crops, so a crop must carry the drops of the photo it is a window of: a router trained on
    crops degraded as whole 224 px photos misses the raindrops of larger photos (docs/router.md)."""
    low, high = (math.log(side) for side in sides)

    def degrade_window(image: torch.Tensor, kind: object, *, generator: torch.Generator,
                       **options: object) -> torch.Tensor:
        side = min(image.shape[-2:])
        u = float(torch.rand((), generator=generator))
        frame = max(side, round(math.exp(low + u * (high - low))))
        return degrade(image, kind, generator=generator, frame_side=frame, **options)

    return degrade_window


def photo_split() -> tuple[list[Path], list[Path]]:
    """(train, validation) photo paths: the LoRA trainers' fixed split (uir_lora.lab.train.data)."""
    from ..train.data import split_photos

    return split_photos()


def load_scaled(path: Path, width: int) -> torch.Tensor:
    """[1,3,H,W] photo resized (area) to ``width`` pixels wide."""
    image = load_image(path)
    height = round(image.shape[-2] * width / image.shape[-1])
    return torch.nn.functional.interpolate(image, size=(height, width), mode="area")


def random_crops(image: torch.Tensor, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random size x size crops of one [1,3,H,W] image -> [count,3,size,size]."""
    height, width = image.shape[-2:]
    ys = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    xs = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    return torch.cat([image[..., y : y + size, x : x + size] for y, x in zip(ys, xs)])


def degrade_as(crops: torch.Tensor, name: str, degrade: DegradeFn, generator: torch.Generator) -> torch.Tensor:
    """Apply class ``name`` to each crop separately (own random severity and parameters)."""
    if name == CLEAN:
        return crops
    return torch.cat([degrade(crop[None], name, generator=generator) for crop in crops]).clamp(0, 1)


def photo_crops(paths: Sequence[Path], per_photo: int, size: int, seed: int) -> torch.Tensor:
    """Seeded crops of every photo at each width in PHOTO_WIDTHS: [len(paths) * per_photo, 3, size, size]."""
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for index, path in enumerate(paths):
        width = PHOTO_WIDTHS[index % len(PHOTO_WIDTHS)]
        crops.append(random_crops(load_scaled(path, width), per_photo, size, generator))
    return torch.cat(crops)


def render_crops(per_render: int, size: int, seed: int) -> torch.Tensor:
    """Seeded crops of the photo-like template renders the LoRA trainer also uses (more scenes than
    the 30 training photos: the router's accuracy was still rising with more examples)."""
    import numpy as np

    from ..train.data import media_images

    generator = torch.Generator().manual_seed(seed)
    crops = []
    for _, image in media_images(min_side=size):
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        crops.append(random_crops(array, per_render, size, generator))
    return torch.cat(crops) if crops else torch.zeros(0, 3, size, size)


def load_photos(paths: Sequence[Path]) -> list[torch.Tensor]:
    """Whole photos, alternately PHOTO_WIDTHS wide, as [1,3,H,W] (sizes differ: a list)."""
    return [load_scaled(path, PHOTO_WIDTHS[i % len(PHOTO_WIDTHS)]) for i, path in enumerate(paths)]


def whole_split_photos(split: str) -> tuple[list[str], list[torch.Tensor], dict]:
    """(names, whole photos as ``load_photos`` gives them, cache key) of the "train" or "val" split."""
    paths = photo_split()[0 if split == "train" else 1]
    names = [path.name for path in paths]
    return names, load_photos(paths), {"photos": names, "widths": list(PHOTO_WIDTHS)}


def encode_photos(encoder: DegradationEncoder, photos: Sequence[torch.Tensor], name: str, degrade: DegradeFn,
                  seed: int, draws: int, *, cache_key: dict, cache_dir: Path | None = None,
                  pooled: bool = False) -> torch.Tensor:
    """Features [len(photos) * draws, dim] of whole photos degraded as class ``name`` (``draws`` independent
    draws each; a clean photo repeats), encoded as the router encodes a user's image: its crops at
    native resolution, averaged; with ``pooled`` the trained encoder's statistics appended (``features``)."""

    read = functools.partial(encoder.features, pooled=True) if pooled else encoder.features

    def compute() -> torch.Tensor:
        generator = torch.Generator().manual_seed(class_seed(seed, name))
        rows = []
        for photo in photos:
            for _ in range(draws):
                image = photo if name == CLEAN else degrade(photo, name, generator=generator)
                rows.append(read(image.clamp(0, 1)))
        return torch.cat(rows)

    key = {**cache_key, "whole_photos": True, "name": name, "seed": seed, "draws": draws,
           "encoder": encoder.spec_key(), **({"pooled": True} if pooled else {})}  # earlier keys stay valid
    return cached_features(key, compute, cache_dir)


def compatible_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of synthetic kinds among ``names`` that ``uir_lora.degrade`` can apply together."""
    from ...degrade import KINDS, compatible

    kinds = [n for n in names if n in KINDS]
    return [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:] if compatible((a, b))]


def degrade_pairs(crops: torch.Tensor, pairs: Sequence[tuple[str, str]], degrade: DegradeFn,
                  generator: torch.Generator) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Each crop degraded by a random pair of kinds; returns the images and the pair each got."""
    picks = [pairs[int(torch.randint(0, len(pairs), (), generator=generator))] for _ in range(len(crops))]
    images = torch.cat([degrade(crop[None], list(pair), generator=generator) for crop, pair in zip(crops, picks)])
    return images.clamp(0, 1), picks


def _cache_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir / f"router_features_{digest}.safetensors"


def default_cache_dir() -> Path:
    return Path(os.environ.get("UIR_LORA_CACHE", Path.home() / ".cache" / "uir_lora"))


def class_seed(seed: int, name: str) -> int:
    """Each class draws its own stream, so features do not depend on the order of the bank's LoRAs."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "little")


def encode_class(
    encoder: DegradationEncoder,
    crops: torch.Tensor,
    name: str,
    degrade: DegradeFn,
    seed: int,
    *,
    cache_key: dict | None = None,
    cache_dir: Path | None = None,
    batch: int = 16,
) -> torch.Tensor:
    """Raw features [len(crops), dim] of the crops degraded as class ``name``, cached by ``cache_key``."""

    def compute() -> torch.Tensor:
        degraded = degrade_as(crops, name, degrade, torch.Generator().manual_seed(class_seed(seed, name)))
        return torch.cat([encoder.features(degraded[i : i + batch]) for i in range(0, len(degraded), batch)])

    if cache_key is None:
        return compute()
    whole_images = max(crops.shape[-2:]) > encoder.spec.crop  # crop-sized: the crop layout does not matter
    key = {**cache_key, "name": name, "seed": seed, "encoder": encoder.spec_key(whole_images)}
    return cached_features(key, compute, cache_dir)


def cached_features(key: dict, compute: Callable[[], torch.Tensor], cache_dir: Path | None = None) -> torch.Tensor:
    """``compute()``'s tensor, cached as safetensors (no pickle) under a digest of ``key``."""
    path = _cache_path(cache_dir or default_cache_dir(), key)
    if path.is_file():
        return load_file(str(path))["features"]
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": features.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return features


def encode_classes(
    encoder: DegradationEncoder,
    crops: torch.Tensor,
    names: Sequence[str],
    degrade: DegradeFn,
    seed: int,
    **cache: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every class stacked, and labels (index into ``names``)."""
    features = [encode_class(encoder, crops, name, degrade, seed, **cache) for name in names]
    labels = torch.cat([torch.full((len(f),), i) for i, f in enumerate(features)])
    return torch.cat(features), labels
