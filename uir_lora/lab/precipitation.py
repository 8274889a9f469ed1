"""A third training synthesis of rain, snow and raindrops on glass, from other physical models than
``uir_lora.degrade`` and ``uir_lora.lab.degrade_alt`` (which both draw bright streaks and white flakes).

- **Rain** (Garg and Nayar's photometry of falling drops): a streak is a drop smeared by the exposure, and
  its radiance is the scene refracted through the drop, a wide-angle average of the scene plus a glint, not a
  fixed white. So a streak over a bright sky nearly vanishes and one over a dark wall is bright. Layers at
  several depths: near streaks wide, long, out of focus and faint; far ones thin, short and dense. Beyond
  them rain accumulates into a veil (the heavy-rain model ``I = T (J + S) + (1 - T) A``).
- **Snow**: far flakes as dots, middle flakes smeared along their fall, near flakes as out-of-focus discs;
  every flake lit by the scene's ambient light, over a veil of falling snow.
- **Raindrops on glass**: spherical caps whose slope displaces the view of a defocused scene (a small lens
  that magnifies and inverts it), rims darkened by internal reflection, a glint; some drops out of focus.

Written by hand: no library draws weather. Training only (``lab``); the runtime never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.filters import spatial_gradient

from ..degrade._common import (
    coin,
    each_image,
    gaussian_blur,
    lerp,
    luminance,
    rand,
    randint,
    smooth_random_field,
    uniform,
)
from ..degrade.blur import disk_kernel

KINDS: tuple[str, ...] = ("rain", "snow", "raindrop")


def _fft_convolve(layer: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Circular convolution of [1,1,H,W] with a centred [k,k] kernel: long streak kernels cost no more than
    short ones, and a streak leaving one edge entering the other is harmless for a layer of rain.

    By hand because kornia's ``fft_conv`` arrived in kornia 0.9 and the pack supports kornia from 0.7 (what
    ComfyUI requires); with 0.9 as the floor, ``fft_conv(..., border_type="circular")`` would replace it."""
    height, width = layer.shape[-2:]
    size = kernel.shape[-1]
    padded = layer.new_zeros((max(height, size), max(width, size)))
    padded[:size, :size] = kernel
    padded = torch.roll(padded, shifts=(-(size // 2), -(size // 2)), dims=(0, 1))
    spectrum = torch.fft.rfft2(layer, s=padded.shape) * torch.fft.rfft2(padded)
    return torch.fft.irfft2(spectrum, s=padded.shape)[..., :height, :width]


def _peak_one(kernel: torch.Tensor) -> torch.Tensor:
    """A kernel scaled to peak 1: a lone seed keeps its own opacity, however long the streak or large the flake."""
    return kernel / kernel.max()


def _streak_kernel(length: float, width: float, angle: float) -> torch.Tensor:
    """A tapered streak of peak 1 along ``angle`` (radians from vertical): a lone drop keeps its opacity."""
    size = 2 * math.ceil(0.6 * length + 2.0 * width) + 1
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    along = xs * math.sin(angle) + ys * math.cos(angle)
    across = xs * math.cos(angle) - ys * math.sin(angle)
    kernel = torch.exp(-0.5 * (along / (length / 2.5)) ** 2 - 0.5 * (across / max(width / 2.0, 0.35)) ** 2)
    return _peak_one(kernel)


def _seeds(like: torch.Tensor, density: float, gen: torch.Generator, low: float) -> torch.Tensor:
    """Sparse points of random strength in [low, 1], [1,1,H,W]."""
    shape = (1, 1, *like.shape[-2:])
    return (rand(shape, gen, like) < density).to(like.dtype) * rand(shape, gen, like).mul(1.0 - low).add(low)


def _over(base: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    alpha = alpha.clamp(0.0, 1.0)
    return base * (1.0 - alpha) + colour * alpha


def _veil(image: torch.Tensor, amount: float, light: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Far precipitation scatters light like fog, thicker in some places than others."""
    field = 0.6 + 0.8 * smooth_random_field(gen, image, randint(gen, 2, 4))
    return _over(image, amount * field, light)


def rain(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = max(height, width) / 256.0
    fall = uniform(gen, -0.5, 0.5)  # radians from vertical: the wind's slant, shared by every layer
    # What a drop refracts: a wide view of the scene (a drop sees about 165 degrees), brightened, plus a glint.
    surround = gaussian_blur(image, max(height, width) / 6.0)
    radiance = (surround * uniform(gen, 1.0, 1.35) + uniform(gen, 0.0, 0.2)).clamp(0.0, 1.0)
    coverage = torch.zeros_like(image[:, :1])
    layers = randint(gen, 2, 4)
    for index in range(layers):
        depth = (index + uniform(gen, 0.0, 1.0)) / layers  # 0 near the lens, 1 far
        length = lerp(10.0, 55.0, severity) * lerp(1.4, 0.5, depth) * scale * uniform(gen, 0.8, 1.2)
        streak_width = lerp(2.6, 0.7, depth) * max(scale, 0.5)
        share = lerp(0.03, 0.12, severity) * uniform(gen, 0.6, 1.4)  # of the image a layer's streaks cover
        seeds = _seeds(image, share / max(length * streak_width, 1.0), gen, 0.4)
        streaks = _fft_convolve(seeds, _streak_kernel(length, streak_width, fall + uniform(gen, -0.06, 0.06)))
        defocus = lerp(1.6, 0.0, depth) * scale
        if defocus > 0.3:
            streaks = gaussian_blur(streaks, defocus)
        opacity = lerp(0.25, 0.75, severity) * lerp(0.5, 1.0, depth)  # near drops are out of focus: fainter
        coverage = 1.0 - (1.0 - coverage) * (1.0 - (streaks * opacity).clamp(0.0, 1.0))
    rained = _over(image, coverage, radiance)
    light = image.mean(dim=(2, 3), keepdim=True)
    light = light + (1.0 - light) * uniform(gen, 0.3, 0.7)
    return _veil(rained, lerp(0.03, 0.25, severity) * uniform(gen, 0.3, 1.0), light, gen)


def snow(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = max(height, width) / 256.0
    # Flakes are white but lit by the scene: in a dim street they are grey.
    ambient = luminance(gaussian_blur(image, max(height, width) / 8.0))
    tint = torch.tensor([0.97, 0.99, 1.0], dtype=image.dtype).view(1, 3, 1, 1)
    light = (ambient + (1.0 - ambient) * uniform(gen, 0.5, 0.9)) * tint
    fall = uniform(gen, -0.7, 0.7)
    far = _fft_convolve(_seeds(image, lerp(0.002, 0.01, severity), gen, 0.5),
                        _streak_kernel(uniform(gen, 0.8, 2.0), uniform(gen, 0.8, 1.4), fall))
    middle_seeds = _seeds(image, lerp(0.0004, 0.003, severity), gen, 0.6)
    middle = _fft_convolve(middle_seeds, _streak_kernel(uniform(gen, 1.5, 7.0) * max(scale, 0.5),
                                                        uniform(gen, 1.2, 2.5) * max(scale, 0.5), fall))
    near = _fft_convolve(_seeds(image, lerp(0.00003, 0.0004, severity), gen, 0.7),
                         _peak_one(disk_kernel(uniform(gen, 3.0, 9.0) * max(scale, 0.5))))
    near = gaussian_blur(near.clamp(0.0, 1.0), uniform(gen, 1.0, 2.5) * max(scale, 0.5))
    opacity = lerp(0.55, 0.95, severity)
    coverage = 1.0 - ((1.0 - (far * opacity * uniform(gen, 0.5, 0.9)).clamp(0.0, 1.0))
                      * (1.0 - (middle * opacity).clamp(0.0, 1.0))
                      * (1.0 - (near * uniform(gen, 0.25, 0.6)).clamp(0.0, 1.0)))
    snowed = _over(image, coverage, light)
    grey = luminance(snowed).expand_as(snowed)
    muted = snowed + uniform(gen, 0.0, 0.3) * severity * (grey - snowed)
    return _veil(muted, lerp(0.03, 0.25, severity) * uniform(gen, 0.3, 1.0), light.mean(dim=(2, 3), keepdim=True),
                 gen)


def raindrop(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    side = min(height, width)
    count = max(1, round(lerp(3.0, 16.0, severity) * height * width / side**2 * uniform(gen, 0.7, 1.3)))
    ys = torch.arange(height, dtype=image.dtype).view(-1, 1)
    xs = torch.arange(width, dtype=image.dtype).view(1, -1)
    cap = torch.zeros((height, width), dtype=image.dtype)
    radius_mean = side * lerp(0.04, 0.08, severity)
    for _ in range(count):
        cy, cx = uniform(gen, 0.0, height), uniform(gen, 0.0, width)
        radius = radius_mean * uniform(gen, 0.4, 1.4)
        for _ in range(randint(gen, 1, 3)):  # a drop that ran or merged is a cluster of caps, not a circle
            part = radius * uniform(gen, 0.5, 1.0)
            oy, ox = cy + uniform(gen, -0.8, 0.8) * radius, cx + uniform(gen, -0.8, 0.8) * radius
            sphere = (1.0 - ((ys - oy) ** 2 + (xs - ox) ** 2) / part**2).clamp_min(0.0).sqrt() * part
            cap = torch.maximum(cap, sphere)
    cap = cap.view(1, 1, height, width)
    alpha = (cap / (0.2 * radius_mean)).clamp(0.0, 1.0)
    slope = spatial_gradient(cap, normalized=True).squeeze(1).clamp(-3.0, 3.0)  # [1,2,H,W]: d/dx, d/dy
    # A cap refracts like a lens: it shows the scene displaced along its slope, upside down near the rim.
    power = uniform(gen, 0.6, 1.4) * radius_mean
    grid_x = (xs + power * slope[:, 0, :, :].squeeze(0)) / max(width - 1, 1) * 2.0 - 1.0
    grid_y = (ys + power * slope[:, 1, :, :].squeeze(0)) / max(height - 1, 1) * 2.0 - 1.0
    grid = torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0)
    behind = gaussian_blur(image, uniform(gen, 1.0, 4.0) * side / 256.0)  # the scene is far from the glass
    seen = F.grid_sample(behind, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    thinness = (1.0 - cap / cap.amax().clamp_min(1e-6)).clamp(0.0, 1.0) * (cap > 0).to(image.dtype)
    shade = 1.0 - uniform(gen, 0.2, 0.6) * thinness**2  # light leaving the rim is reflected back inside
    angle = uniform(gen, 0.0, 2.0 * math.pi)
    glint = (slope[:, 0:1] * math.cos(angle) + slope[:, 1:2] * math.sin(angle)).clamp_min(0.0) / 3.0
    drops = (seen * shade + uniform(gen, 0.0, 0.4) * glint**4).clamp(0.0, 1.0)
    if coin(gen, 0.35):  # drops on a lens close to the camera are out of focus themselves
        sigma = uniform(gen, 1.5, 4.0) * side / 256.0
        drops, alpha = gaussian_blur(drops * alpha, sigma), gaussian_blur(alpha, sigma)
        drops = drops / alpha.clamp_min(1e-3)
    return _over(image, alpha, drops.clamp(0.0, 1.0))


_MODELS = {"rain": rain, "snow": snow, "raindrop": raindrop}


def degrade_precipitation(image: torch.Tensor, kind: str, gen: torch.Generator,
                          severities: Sequence[float] | None = None) -> torch.Tensor:
    """``kind`` on every image of a [N,3,H,W] batch in [0, 1], each with its own severity (drawn when None)."""
    if kind not in _MODELS:
        raise ValueError(f"the precipitation synthesis draws {KINDS}, not {kind!r}")
    return each_image(image, gen, severities, _MODELS[kind])
