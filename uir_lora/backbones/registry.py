"""Backbone families by name, each with its loader; a table instead of an if/elif ladder."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import BackboneError
from ..paths import bundled_bank_root
from .base import Backbone

_CACHE: dict[tuple[str, str], tuple[float, Backbone]] = {}
_LOCK = threading.Lock()


def _load_embedded(path: Path | None) -> Backbone:
    from .embedded import FFDNET_FILE, EmbeddedFFDNetBackbone

    return EmbeddedFFDNetBackbone.from_file(path or bundled_bank_root() / "backbones" / FFDNET_FILE)


def _load_sd_turbo(path: Path | None) -> Backbone:
    from .sd_turbo import load_sd_turbo  # heavy (diffusers); imported only when asked for

    if path is None:
        raise BackboneError("the sd-turbo family needs a path: a diffusers folder (models/diffusers/<name>, "
                            "with model_index.json) or a single-file checkpoint (models/checkpoints/*.safetensors)")
    return load_sd_turbo(path)


FAMILIES: dict[str, Callable[[Path | None], Backbone]] = {
    "embedded-ffdnet": _load_embedded,
    "sd-turbo": _load_sd_turbo,
}


def load_backbone(family: str, path: str | Path | None = None) -> Backbone:
    """Load (or reuse, keyed by path and mtime) a backbone of ``family``."""
    if family not in FAMILIES:
        raise BackboneError(f"unknown backbone family {family!r}; known: {', '.join(FAMILIES)}")
    path = Path(path) if path is not None else None
    key = (family, str(path))
    mtime = path.stat().st_mtime if path is not None and path.exists() else 0.0
    with _LOCK:
        cached = _CACHE.get(key)
        if cached and cached[0] == mtime:
            return cached[1]
        backbone = FAMILIES[family](path)
        _CACHE[key] = (mtime, backbone)
        return backbone
