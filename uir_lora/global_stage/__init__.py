"""The global stage: per-kind whole-image transforms (tone curve, smooth gain and offset) before the backbone."""

from .adapter import GlobalAdapter, GlobalParams, apply_global, run_adapters, thumbnail

__all__ = ["GlobalAdapter", "GlobalParams", "apply_global", "run_adapters", "thumbnail"]
