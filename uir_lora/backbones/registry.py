"""Backbone families by name, each with its loader; a table instead of an if/elif ladder."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BackboneError
from ..paths import bundled_bank_root
from .base import Backbone

Placement = tuple[torch.device, torch.dtype]


@dataclass
class _Cached:
    """One weights file: the backbone as loaded (the master) and its copies at other devices/dtypes."""

    mtime: float
    master: Backbone
    placement: Placement  # the master's, recorded at load time
    copies: dict[Placement, Backbone] = field(default_factory=dict)


_CACHE: dict[tuple[str, str], _Cached] = {}
_LOCK = threading.Lock()
MAX_COPIES = 2  # placements kept per weights file beside the master (least recently used go first)


def _load_embedded(path: Path | None) -> Backbone:
    from .embedded import FFDNET_FILE, EmbeddedFFDNetBackbone

    return EmbeddedFFDNetBackbone.from_file(path or bundled_bank_root() / "backbones" / FFDNET_FILE)


def _load_sd_turbo(path: Path | None) -> Backbone:
    from .sd_turbo import load_sd_turbo  # heavy (diffusers); imported only when asked for

    if path is None:
        raise BackboneError("the sd-turbo family needs a path: a diffusers folder (models/diffusers/<name>, "
                            "with model_index.json) or a single-file checkpoint (models/checkpoints/*.safetensors)")
    return load_sd_turbo(path)


def _load_spandrel(path: Path | None) -> Backbone:
    from .spandrel_backbone import SpandrelBackbone

    if path is None:
        raise BackboneError("the spandrel family needs a path: a model file spandrel loads (ComfyUI's "
                            "models/upscale_models/*.safetensors, or .pth/.ckpt holding only tensors)")
    return SpandrelBackbone.from_file(path)


def _load_realesrgan(path: Path | None) -> Backbone:
    from .realesrgan import load_realesrgan

    return load_realesrgan(path)


FAMILIES: dict[str, Callable[[Path | None], Backbone]] = {
    "embedded-ffdnet": _load_embedded,
    "sd-turbo": _load_sd_turbo,
    "spandrel": _load_spandrel,
    "embedded-realesrgan": _load_realesrgan,
}


def _canonical_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" are one place: one copy
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def load_backbone(
    family: str,
    path: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Backbone:
    """Load (or reuse, keyed by path and mtime) a backbone of ``family`` on ``device`` in ``dtype``.

    Each (device, dtype) gets its own cached object, copied from the one loaded from disk (returned
    itself when it already matches; None keeps its device / dtype), so callers asking for different
    placements never move each other's backbone. Do not ``.to()`` the result: ask for the placement here.
    """
    if family not in FAMILIES:
        raise BackboneError(f"unknown backbone family {family!r}; known: {', '.join(FAMILIES)}")
    path = Path(path) if path is not None else None
    key = (family, str(path))
    mtime = path.stat().st_mtime if path is not None and path.exists() else 0.0
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is None or cached.mtime != mtime:
            master = FAMILIES[family](path)
            cached = _CACHE[key] = _Cached(mtime, master, (master.device, master.dtype))
        placement = (_canonical_device(device) if device is not None else cached.placement[0],
                     dtype if dtype is not None else cached.placement[1])
        if placement == cached.placement:
            return cached.master
        if placement not in cached.copies:
            while len(cached.copies) >= MAX_COPIES:  # a graph that switches dtypes must not keep every copy
                cached.copies.pop(next(iter(cached.copies)))
            # deepcopy keeps shared submodules shared (sd-turbo's VAE) and the cached float32 fingerprint
            cached.copies[placement] = copy.deepcopy(cached.master).to(*placement)
        cached.copies[placement] = cached.copies.pop(placement)  # most recently used last
        return cached.copies[placement]


BACKBONE_ALIASES = {"embedded": "embedded-ffdnet"}
PATH_FAMILY = "sd-turbo"
"""The family a bare path names: the one that loads from a user's model folders."""


def parse_backbone_spec(spec: str) -> tuple[str, Path | None]:
    """``embedded`` | ``FAMILY`` | ``FAMILY=PATH`` | ``PATH`` (an SD-Turbo-family folder or checkpoint).

    Returns (family, path); the path must exist. Loading is left to load_backbone.
    """
    text = spec.strip()
    name, sep, where = text.partition("=")
    family = BACKBONE_ALIASES.get(name, name)
    if family in FAMILIES:
        path = Path(where) if sep else None
    elif sep:
        raise BackboneError(f"unknown backbone family {name!r} in {spec!r}; known: {', '.join(FAMILIES)}")
    else:
        family, path = PATH_FAMILY, Path(text)
    if path is not None and not path.exists():
        raise BackboneError(f"backbone {spec!r}: {path} does not exist; give a diffusers folder (with "
                            f"model_index.json) or a .safetensors checkpoint, or 'embedded'")
    return family, path
