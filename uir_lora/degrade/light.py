"""Illumination and colour: low light (under-exposure) and colour cast (wrong white balance)."""

from __future__ import annotations

import math

import torch

from ._common import choice, coin, lerp, luminance, randn, uniform

_LUMA = (0.299, 0.587, 0.114)
DEVELOPED_SHARE = 1 / 3
"""Share of low-light examples whose darkness a camera has already developed (``developed_underexposure``)."""


def _gains(red: float, green: float, blue: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([red, green, blue], device=like.device, dtype=like.dtype).view(1, 3, 1, 1)


def developed_underexposure(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """Too little light, then a camera's development: auto-gain wins back part of the lost stops, a global
    tone-mapping shoulder (Reinhard's, with a random white point) keeps the highlights from clipping, and
    veiling flare lifts the blacks. The result is dim and flat rather than crushed: no highlight reaches
    white and the shadows stay open, which is how many phones and cameras render a dark scene."""
    stops = lerp(1.0, 5.0, severity) * uniform(gen, 0.85, 1.15)
    recovered = uniform(gen, 0.3, 0.7)  # share of the lost stops won back by the camera's gain
    white = uniform(gen, 1.0, 4.0)  # Reinhard's white point: 1 squeezes highlights most
    flare = uniform(gen, 0.0, 0.02)  # in linear light: blacks lifted up to 0.17 in display values
    peak = math.exp(uniform(gen, math.log(2000.0), math.log(30000.0)))  # photons at white: shot noise
    linear = image.clamp(0.0, 1.0).pow(2.2) * 2.0 ** (-stops)
    linear = linear + torch.sqrt(linear / peak + (uniform(gen, 0.2, 1.0) / 255.0) ** 2) * randn(image.shape, gen, image)
    lifted = linear.clamp_min(0.0) * 2.0 ** (stops * recovered)
    toned = lifted * (1.0 + lifted / white**2) / (1.0 + lifted)
    return (flare + (1.0 - flare) * toned.clamp(0.0, 1.0)).pow(1 / 2.2)


def low_light(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    if coin(gen, DEVELOPED_SHARE):
        return developed_underexposure(image, severity, gen)
    gamma = lerp(1.5, 3.5, severity) * uniform(gen, 0.9, 1.1)
    scale = lerp(0.35, 0.05, severity) * uniform(gen, 0.85, 1.15)
    clean = image.clamp(0.0, 1.0)
    if coin(gen, 0.5):
        dark = scale * clean.pow(gamma)
    else:
        # Darken luminance only, keeping chroma ratios (avoids the saturation boost of per-channel gamma).
        luma = luminance(clean).clamp_min(1e-4)
        dark = clean * (scale * luma.pow(gamma) / luma)
    if coin(gen, 0.5):
        # Warm tungsten (t > 0) or cool moonlight (t < 0) tint.
        tint = uniform(gen, -1.0, 1.0)
        dark = dark * _gains(1.0 + 0.15 * tint, 1.0, 1.0 - 0.2 * tint, dark)
    # Dark frames are noisy: heteroscedastic read + shot noise, weak in absolute terms.
    read_sigma = uniform(gen, 0.5, 4.0) / 255.0
    peak = math.exp(uniform(gen, math.log(300.0), math.log(3000.0)))
    noise_std = torch.sqrt(read_sigma**2 + dark.clamp_min(0.0) / peak)
    return dark + noise_std * randn(image.shape, gen, image)


def _cast_direction(gen: torch.Generator) -> list[float]:
    """A zero-mean per-channel shift direction, scaled so its largest component is 1."""
    kind = choice(gen, ("random", "temperature", "tint"), weights=(0.5, 0.3, 0.2))
    sign = 1.0 if coin(gen, 0.5) else -1.0
    if kind == "temperature":
        direction = [sign, 0.1 * sign, -sign]
    elif kind == "tint":
        direction = [-0.5 * sign, sign, -0.5 * sign]
    else:
        raw = randn((3,), gen, torch.zeros(1))
        direction = (raw - raw.mean()).tolist()
    largest = max(abs(value) for value in direction) or 1.0
    return [value / largest for value in direction]


def _sepia(image: torch.Tensor) -> torch.Tensor:
    matrix = torch.tensor(
        [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
        device=image.device,
        dtype=image.dtype,
    )
    return torch.einsum("oc,bchw->bohw", matrix, image)


def color_cast(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    amplitude = lerp(0.1, 0.4, severity) * uniform(gen, 0.85, 1.0)
    gains = [1.0 + amplitude * value for value in _cast_direction(gen)]
    # Normalise so overall luminance is kept: a cast changes hue, not exposure.
    luma_gain = sum(weight * gain for weight, gain in zip(_LUMA, gains, strict=True))
    gains = [min(1.4, max(0.6, gain / luma_gain)) for gain in gains]
    out = image * _gains(*gains, image)
    if coin(gen, 0.35):
        # Faded print / veiling glare: contrast pulled toward the mean.
        fade = lerp(0.1, 0.4, severity) * uniform(gen, 0.5, 1.0)
        out = out + fade * (out.mean(dim=(-2, -1), keepdim=True) - out)
    if coin(gen, 0.25):
        mix = lerp(0.15, 0.6, severity) * uniform(gen, 0.5, 1.0)
        out = out + mix * (_sepia(out).clamp(0.0, 1.0) - out)
    return out
