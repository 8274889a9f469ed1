"""Low resolution: downscale by x2-x4, then upscale back so the shape is unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import choice, coin, lerp, uniform


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(image, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(image, size=size, mode=mode)


def low_resolution(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    factor = lerp(2.0, 4.0, severity) * uniform(gen, 0.95, 1.05)
    height, width = image.shape[-2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    down_mode = choice(gen, ("bicubic", "bilinear", "area"))
    # Without antialiasing, bilinear/bicubic downscaling aliases like a cheap sensor readout.
    antialias = coin(gen, 0.7)
    up_mode = choice(gen, ("bicubic", "bilinear", "nearest"), weights=(0.55, 0.35, 0.1))
    low = _resize(image, small, down_mode, antialias)
    return _resize(low, (height, width), up_mode, antialias=False)
