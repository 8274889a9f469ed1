"""The scene pool: camera photographs from Debian wallpaper packages, split into TRAIN and CHECK scenes.

The images are not in the repository (CC-BY / CC-BY-SA / GPL, never shipped); tools/build_scene_pool.py
fetches them into data/scenes/ and benchmarks/scenes.json lists each kept file with its sha256, licence and
split. CHECK scenes belong to the independent check set (benchmarks/wild.py) and are never used for
training or tuning. Images are returned downscaled, like the interiors, so wallpaper-sized JPEG
artefacts and sensor noise average out of the clean targets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..paths import PACK_ROOT

DEFAULT_LIST = PACK_ROOT / "benchmarks" / "scenes.json"
DEFAULT_POOL = PACK_ROOT / "data" / "scenes"
SPLITS = ("TRAIN", "CHECK")
MAX_SHORT_SIDE = 960
"""Clean targets are downscaled by a whole factor of at least 2 until the short side is at most this."""
BUILD_HINT = "build the pool with: python tools/build_scene_pool.py (needs apt-get; about 175 MB of downloads)"


def read_scene_list(path: Path = DEFAULT_LIST) -> list[dict]:
    """The committed scene records (name, package, path, sha256, licence, split, ...)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: the scene list is missing; restore it with git, or rebuild it with "
                         "python tools/build_scene_pool.py --refresh-list") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); restore it from git or rebuild it with "
                         "python tools/build_scene_pool.py --refresh-list") from None
    return document["scenes"]


def scene_file(record: dict, pool: Path = DEFAULT_POOL) -> Path:
    """Where the build script keeps a scene: data/scenes/<package>/<name><suffix>."""
    return Path(pool) / f"{record['name']}{Path(record['path']).suffix.lower()}"


def downscale_factor(width: int, height: int) -> int:
    """At least 2 (averages out compression artefacts), more until the short side is at most MAX_SHORT_SIDE."""
    return max(2, math.ceil(min(width, height) / MAX_SHORT_SIDE))


def load_scene(record: dict, pool: Path = DEFAULT_POOL) -> np.ndarray:
    """One scene as an RGB uint8 HxWx3 array, box-downscaled by ``downscale_factor``."""
    path = scene_file(record, pool)
    with Image.open(path) as image:
        image = image.convert("RGB")
        factor = downscale_factor(*image.size)
        return np.asarray(image.reduce(factor))


def scene_records(split: str, list_path: Path = DEFAULT_LIST) -> list[dict]:
    """The records of one split, in the list's order."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    return [r for r in read_scene_list(list_path) if r["split"] == split]


def load_scenes(split: str, pool: Path = DEFAULT_POOL, list_path: Path = DEFAULT_LIST,
                max_scenes: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8 array) for every scene of ``split`` ("TRAIN" or "CHECK"), downscaled.

    Raises InputError naming the build command when the pool has not been built (or is incomplete).
    """
    records = scene_records(split, list_path)[:max_scenes]
    missing = [r["name"] for r in records if not scene_file(r, pool).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(records)} {split} scenes are missing from {pool} "
                         f"(first: {missing[0]}); {BUILD_HINT}")
    return [(r["name"], load_scene(r, pool)) for r in records]
