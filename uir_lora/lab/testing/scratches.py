"""A kind of damage the project does not ship, for the tests, the benchmark and the guide: scratches and dust on a
scanned print or negative. Thin bright or dark lines (most run close to vertical, as film scratches run along the
film) and specks of dust, drawn at pixel scale; how many grows with the image's area.

It has the call shape of ``uir-lora train-lora --degrade``: ``scratches_and_dust(image, generator)`` with an image
[3,H,W] or [B,3,H,W] in 0..1, returning the damaged image of the same shape.
"""

from __future__ import annotations

import math

import torch

REFERENCE_AREA = 256 * 256
"""Line and speck counts are per this many pixels."""
LINES_PER_AREA = (0.5, 2.0)
SPECKS_PER_AREA = (10.0, 40.0)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _count(generator: torch.Generator, per_area: tuple[float, float], area: float, least: int) -> int:
    return max(least, round(_uniform(generator, *per_area) * area))


def _shade(generator: torch.Generator) -> float:
    """Grey level of one mark: bright (a scratch through the emulsion) or dark (dust, a scratch on a print)."""
    return _uniform(generator, 0.85, 1.0) if torch.rand((), generator=generator) < 0.6 else _uniform(generator, 0.0,
                                                                                                    0.15)


def _line_alpha(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Coverage [H, W] of one slightly wavy, anti-aliased line 0.8-2.4 px wide."""
    centre_y, centre_x = _uniform(generator, 0, height), _uniform(generator, 0, width)
    if torch.rand((), generator=generator) < 0.7:
        angle = math.pi / 2 + 0.15 * float(torch.randn((), generator=generator))
    else:
        angle = _uniform(generator, 0, math.pi)
    length = _uniform(generator, 0.3, 1.0) * max(height, width)
    half_width = _uniform(generator, 0.4, 1.2)
    amplitude, period = _uniform(generator, 0, 2.0), _uniform(generator, 40, 200)
    phase = _uniform(generator, 0, 2 * math.pi)
    ys = torch.arange(height, dtype=torch.float32)[:, None] - centre_y
    xs = torch.arange(width, dtype=torch.float32)[None, :] - centre_x
    dx, dy = math.cos(angle), math.sin(angle)
    along = xs * dx + ys * dy
    across = -xs * dy + ys * dx - amplitude * torch.sin(2 * math.pi * along / period + phase)
    distance = torch.sqrt(across.square() + (along.abs() - length / 2).clamp_min(0).square())
    return (half_width + 0.5 - distance).clamp(0, 1) * _uniform(generator, 0.5, 0.95)


def _draw(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One [3,H,W] image with its lines and specks."""
    out = image.float().clone()
    height, width = out.shape[-2:]
    area = height * width / REFERENCE_AREA
    for _ in range(_count(generator, LINES_PER_AREA, area, 1)):
        alpha = _line_alpha(height, width, generator)
        out = out * (1 - alpha) + _shade(generator) * alpha
    for _ in range(_count(generator, SPECKS_PER_AREA, area, 3)):
        radius = 0.6 + 1.9 * float(torch.rand((), generator=generator)) ** 2  # most dust is small
        y, x = _uniform(generator, 0, height), _uniform(generator, 0, width)
        reach = math.ceil(radius) + 1
        top, left = max(0, int(y) - reach), max(0, int(x) - reach)
        bottom, right = min(height, int(y) + reach + 1), min(width, int(x) + reach + 1)
        ys = torch.arange(top, bottom, dtype=torch.float32)[:, None] + 0.5 - y
        xs = torch.arange(left, right, dtype=torch.float32)[None, :] + 0.5 - x
        alpha = (radius + 0.5 - torch.sqrt(ys.square() + xs.square())).clamp(0, 1) * _uniform(generator, 0.6, 1.0)
        window = out[:, top:bottom, left:right]
        out[:, top:bottom, left:right] = window * (1 - alpha) + _shade(generator) * alpha
    return out.clamp(0, 1).to(image.dtype)


def scratches_and_dust(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scratches and dust on ``image`` ([3,H,W] or [B,3,H,W] in 0..1), each image drawn from ``generator``."""
    if image.dim() == 3:
        return _draw(image, generator)
    return torch.stack([_draw(single, generator) for single in image])
