"""Optical blur: motion (linear or camera shake) and defocus (disk, Gaussian, soft disk)."""

from __future__ import annotations

import math

import torch
from kornia.filters import get_gaussian_kernel2d, get_motion_kernel2d

from ._common import choice, convolve, gaussian_blur, lerp, randn, uniform


def _odd(value: float) -> int:
    return max(3, 2 * math.ceil(value / 2.0) + 1)


def linear_motion_kernel(length: float, angle_deg: float, direction: float) -> torch.Tensor:
    """Straight-line kernel from kornia; ``direction`` in [-1, 1] skews weight along the path."""
    size = _odd(length)
    kernel = get_motion_kernel2d(size, angle_deg, direction, mode="bilinear")[0]
    return kernel / kernel.sum()


def shake_trajectory_kernel(length: float, gen: torch.Generator) -> torch.Tensor:
    """Camera-shake kernel from a random-walk trajectory with inertia (kornia has no such model).

    Velocity is integrated from random accelerations, the path is rescaled to span ``length``
    pixels, then splatted bilinearly so sub-pixel positions keep their weight.
    """
    steps = 96
    anchor = torch.zeros(1)
    accel = randn((steps, 2), gen, anchor) * uniform(gen, 0.2, 1.0)
    start_angle = uniform(gen, 0.0, 2.0 * math.pi)
    velocity = torch.tensor([math.cos(start_angle), math.sin(start_angle)]) + accel.cumsum(0) / 6.0
    path = velocity.cumsum(0)
    path = path - (path.amax(0) + path.amin(0)) / 2.0
    extent = (path.amax(0) - path.amin(0)).max().clamp_min(1e-6)
    path = path * ((length - 1.0) / extent)
    size = _odd(length + 2.0)
    path = path + size // 2
    kernel = torch.zeros(size, size)
    base = path.floor()
    frac = path - base
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        weight = (frac[:, 1] if dy else 1 - frac[:, 1]) * (frac[:, 0] if dx else 1 - frac[:, 0])
        rows = (base[:, 1] + dy).long().clamp(0, size - 1)
        cols = (base[:, 0] + dx).long().clamp(0, size - 1)
        kernel.index_put_((rows, cols), weight, accumulate=True)
    return kernel / kernel.sum()


def motion_blur(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    # Random jitter around the severity's nominal length keeps the training range wide.
    length = max(3.0, lerp(5.0, 25.0, severity) * uniform(gen, 0.85, 1.15))
    if choice(gen, ("linear", "shake")) == "linear":
        kernel = linear_motion_kernel(length, uniform(gen, 0.0, 180.0), uniform(gen, -0.6, 0.6))
    else:
        kernel = shake_trajectory_kernel(length, gen)
    return convolve(image, kernel)


def disk_kernel(radius: float) -> torch.Tensor:
    """Anti-aliased pillbox: pixel coverage falls linearly across the rim."""
    half = math.ceil(radius + 0.5)
    coords = torch.arange(-half, half + 1, dtype=torch.float32)
    distance = torch.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    kernel = (radius + 0.5 - distance).clamp(0.0, 1.0)
    return kernel / kernel.sum()


def defocus_blur(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    model = choice(gen, ("disk", "gaussian", "soft_disk"), weights=(0.45, 0.35, 0.2))
    jitter = uniform(gen, 0.9, 1.1)
    if model == "gaussian":
        sigma = lerp(1.0, 4.0, severity) * jitter
        size = 2 * math.ceil(3.0 * sigma) + 1
        return convolve(image, get_gaussian_kernel2d(size, torch.tensor([[sigma, sigma]]))[0])
    radius = lerp(1.5, 6.0, severity) * jitter
    blurred = convolve(image, disk_kernel(radius))
    if model == "soft_disk":
        # Real lenses add aberrations that soften the pillbox rim.
        blurred = gaussian_blur(blurred, uniform(gen, 0.5, 1.0))
    return blurred
