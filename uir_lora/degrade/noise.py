"""Sensor noise: Gaussian (four spatial/chromatic structures) and Poisson-Gaussian.

Noise fields are drawn with ``torch.randn(generator=...)`` rather than
``kornia.augmentation.RandomGaussianNoise`` because the kornia augmentation uses the global RNG,
which would break seed reproducibility.
"""

from __future__ import annotations

import math

import torch

from ._common import choice, convolve, lerp, luminance, randn, uniform


def _channel_correlated(gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Unit-variance noise sharing a luminance-like component across channels (demosaiced sensors)."""
    shared = randn((1, 1, *like.shape[-2:]), gen, like)
    own = randn(like.shape, gen, like)
    mix = uniform(gen, 0.4, 0.95)
    return mix * shared + math.sqrt(1.0 - mix * mix) * own


def _spatially_correlated(gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Unit-variance noise low-passed by a small Gaussian (denoised/resampled pipelines)."""
    sigma = uniform(gen, 0.5, 1.2)
    radius = math.ceil(3.0 * sigma)
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel_1d = torch.exp(-(coords**2) / (2.0 * sigma * sigma))
    kernel = torch.outer(kernel_1d, kernel_1d)
    kernel = kernel / kernel.sum()
    white = randn(like.shape, gen, like)
    # Blurring i.i.d. noise scales its std by the kernel's L2 norm; undo that so sigma stays exact.
    return convolve(white, kernel) / kernel.square().sum().sqrt()


def gaussian_noise(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    sigma = lerp(5.0, 50.0, severity) / 255.0
    structure = choice(gen, ("iid", "channel", "spatial", "grey"), weights=(0.4, 0.2, 0.2, 0.2))
    if structure == "grey":  # one field for all three channels: luminance noise left by chroma denoising
        unit_noise = randn((1, 1, *image.shape[-2:]), gen, image).expand_as(image)
    elif structure == "channel":
        unit_noise = _channel_correlated(gen, image)
    elif structure == "spatial":
        unit_noise = _spatially_correlated(gen, image)
    else:
        unit_noise = randn(image.shape, gen, image)
    return image + sigma * unit_noise


def poisson_gaussian_noise(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """Shot noise (Poisson in photon counts) plus Gaussian read noise."""
    # Log-spaced peak: perceived shot-noise strength scales with 1/sqrt(peak).
    peak = math.exp(lerp(math.log(100.0), math.log(5.0), severity))
    read_sigma = lerp(1.0, 10.0, severity) / 255.0 * uniform(gen, 0.5, 1.0)
    monochrome = uniform(gen, 0.0, 1.0) < 0.25
    clean = image.clamp(0.0, 1.0)
    if monochrome:
        # Luminance-only shot noise, added equally to all channels.
        luma = luminance(clean)
        counts = torch.poisson((luma * peak).to(gen.device), generator=gen).to(image.device)
        noisy = clean + (counts / peak - luma)
    else:
        counts = torch.poisson((clean * peak).to(gen.device), generator=gen).to(image.device)
        noisy = counts / peak
    return noisy + read_sigma * randn(image.shape, gen, image)
