"""Atmosphere and precipitation: haze, rain streaks, snow.

All three are hand-written physical sketches: no library (kornia included) provides them.
"""

from __future__ import annotations

import math

import torch

from ._common import (
    choice,
    coin,
    convolve,
    frame_scale,
    frame_window,
    gaussian_blur,
    lerp,
    luminance,
    rand,
    randint,
    screen,
    smooth_random_field,
    uniform,
)
from .blur import linear_motion_kernel


def _depth_proxy(image: torch.Tensor, gen: torch.Generator, frame_side: int | None = None) -> torch.Tensor:
    """Relative scene depth in [0, 1], [1,1,H,W]: random smooth field, image cues, or a blend.

    The field and the row prior span the whole photo (``frame_side``); a crop gets its window of them.
    """
    height, width = image.shape[-2:]
    frame_h, frame_w, top, left = frame_window(image, frame_side, gen)
    frame = image.new_empty((1, 1, frame_h, frame_w))
    field = smooth_random_field(gen, frame, randint(gen, 2, 6))[..., top:top + height, left:left + width]
    # Outdoor prior: the top of the frame and bright (sky-like) regions tend to be far away.
    rows = torch.linspace(1.0, 0.0, frame_h, device=image.device, dtype=image.dtype)[top:top + height]
    rows = rows.view(1, 1, height, 1)
    bright = gaussian_blur(luminance(image.clamp(0.0, 1.0)), max(1.0, frame_h / 32.0))
    cue_weight = uniform(gen, 0.3, 0.8)
    cues = cue_weight * rows + (1.0 - cue_weight) * bright
    model = choice(gen, ("field", "cues", "blend"))
    blend = {"field": 1.0, "cues": 0.0, "blend": uniform(gen, 0.3, 0.7)}[model]
    depth = blend * field + (1.0 - blend) * cues.expand_as(field)
    if (frame_h, frame_w) != (height, width):
        return depth.clamp(0.0, 1.0)  # a window keeps the photo's depth range: stretching it would not
    low, high = depth.amin(), depth.amax()
    return (depth - low) / (high - low).clamp_min(1e-6)


def haze(image: torch.Tensor, severity: float, gen: torch.Generator, frame_side: int | None = None) -> torch.Tensor:
    """Koschmieder scattering: I = J t + A (1 - t), t = exp(-beta d)."""
    beta = lerp(0.5, 3.0, severity) * uniform(gen, 0.9, 1.1)
    nearest = uniform(gen, 0.15, 0.45)
    depth = nearest + (1.0 - nearest) * _depth_proxy(image, gen, frame_side)
    transmission = torch.exp(-beta * depth)
    brightness = uniform(gen, 0.7, 1.0)
    airlight = [min(1.0, brightness + uniform(gen, -0.05, 0.05)) for _ in range(3)]
    airlight_map = torch.tensor(airlight, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return image * transmission + airlight_map * (1.0 - transmission)


def _streak_layer(image: torch.Tensor, severity: float, gen: torch.Generator, angle: float) -> torch.Tensor:
    """One depth layer of rain: sparse seeds smeared into lines by a motion kernel, [1,1,H,W]."""
    density = lerp(0.002, 0.015, severity) * uniform(gen, 0.4, 1.6)
    length = lerp(8.0, 30.0, severity) * uniform(gen, 0.5, 1.3)
    shape = (1, 1, *image.shape[-2:])
    seeds = (rand(shape, gen, image) < density).to(image.dtype) * rand(shape, gen, image).mul(0.5).add(0.5)
    kernel = linear_motion_kernel(length, angle + uniform(gen, -4.0, 4.0), 0.0)
    # The kernel sums to 1 over ~size pixels; rescale so a lone streak keeps its seed brightness.
    streaks = convolve(seeds, kernel) * kernel.shape[-1]
    width_sigma = uniform(gen, 0.3, 1.0)
    streaks = gaussian_blur(streaks, width_sigma) * max(1.0, math.sqrt(2.0 * math.pi) * width_sigma)
    return (streaks * lerp(0.35, 0.9, severity) * uniform(gen, 0.7, 1.0)).clamp(0.0, 1.0)


def rain(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    angle = 90.0 + uniform(gen, -25.0, 25.0)  # kornia: 90 degrees is vertical
    out = image
    for _ in range(randint(gen, 1, 3)):
        streaks = _streak_layer(image, severity, gen, angle)
        out = screen(out, streaks * uniform(gen, 0.8, 1.0))
    # Rain scatters light: a faint bright veil lowers contrast.
    veil = lerp(0.02, 0.15, severity) * uniform(gen, 0.3, 1.0)
    return out * (1.0 - veil) + veil * uniform(gen, 0.75, 0.95)


def _flake_layer(image: torch.Tensor, gen: torch.Generator, density: float, sigma: float) -> torch.Tensor:
    """Sparse seeds blurred into round flakes whose peak equals the seed brightness, [1,1,H,W]."""
    shape = (1, 1, *image.shape[-2:])
    seeds = (rand(shape, gen, image) < density).to(image.dtype) * rand(shape, gen, image).mul(0.4).add(0.6)
    # A blurred single pixel peaks at about 1 / (2 pi sigma^2); undo that to keep flakes opaque.
    return gaussian_blur(seeds, sigma) * max(1.0, 2.0 * math.pi * sigma * sigma)


def snow(image: torch.Tensor, severity: float, gen: torch.Generator, frame_side: int | None = None) -> torch.Tensor:
    scale = max(image.shape[-2:]) * frame_scale(image, frame_side) / 256.0
    small = _flake_layer(image, gen, lerp(0.002, 0.012, severity), uniform(gen, 0.4, 0.9))
    large = _flake_layer(image, gen, lerp(0.0002, 0.002, severity), uniform(gen, 1.2, 3.0) * max(scale, 0.5))
    flakes = (small + large * uniform(gen, 0.7, 1.0)).clamp(0.0, 1.0)
    if coin(gen, 0.5):
        # Wind or exposure time smears flakes along their fall direction.
        length = uniform(gen, 3.0, 11.0)
        kernel = linear_motion_kernel(length, 90.0 + uniform(gen, -45.0, 45.0), 0.0)
        flakes = (convolve(flakes, kernel) * math.sqrt(kernel.shape[-1])).clamp(0.0, 1.0)
    opacity = lerp(0.6, 1.0, severity)
    out = screen(image, flakes * opacity)
    veil = lerp(0.03, 0.25, severity) * uniform(gen, 0.5, 1.0)
    return out * (1.0 - veil) + veil * uniform(gen, 0.85, 1.0)
