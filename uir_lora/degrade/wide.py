"""The wide synthesis profile: the field's degradation models beside the standard ones.

Each kind draws, with some probability, from a wider family than the standard profile (after
BSRGAN's and Real-ESRGAN's degradation models): generalised-Gaussian, plateau, anisotropic and
sinc blur kernels; colour and grey noise at any level; JPEG from q95 to q10; camera tone curves for
low light; coloured airlight and uneven haze. Every image then passes a camera finish with some
probability: the faint sensor noise and mild JPEG a real photo carries, so a blurred or hazy photo
does not look noise-free as no camera makes it.

The kernels are written by hand: the libraries that have them (basicsr) pull torchvision and a
training stack this project does not use; kornia has isotropic and axis-aligned Gaussians only.
"""

from __future__ import annotations

import math

import torch

from ._common import choice, coin, convolve, lerp, randint, randn, uniform
from .blur import defocus_blur, motion_blur, shake_trajectory_kernel
from .compression import _jpeg_roundtrip
from .light import low_light
from .noise import gaussian_noise
from .weather import haze

WIDE_SHARE = 0.5
"""How often a kind draws from the wide family instead of its standard model."""
FINISH_PROBABILITY = 0.7
"""How often an image (damaged or clean) gets the camera finish."""


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    return coords[None, :].expand(size, size), coords[:, None].expand(size, size)


def _rotated_quadratic(sigma_x: float, sigma_y: float, angle: float, size: int) -> torch.Tensor:
    """x^T Sigma^-1 x over a size x size grid for a Gaussian rotated by ``angle`` (radians)."""
    cos, sin = math.cos(angle), math.sin(angle)
    xs, ys = _grid(size)
    u = cos * xs + sin * ys
    v = -sin * xs + cos * ys
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def anisotropic_kernel(sigma_x: float, sigma_y: float, angle: float, shape: str = "gaussian",
                       beta: float = 2.0) -> torch.Tensor:
    """Gaussian (beta 2), generalised Gaussian exp(-q^(beta/2)) or plateau 1 / (1 + q^(beta/2))."""
    size = max(3, 2 * math.ceil(3.0 * max(sigma_x, sigma_y)) + 1)
    quadratic = _rotated_quadratic(sigma_x, sigma_y, angle, size)
    if shape == "plateau":
        kernel = 1.0 / (1.0 + quadratic.pow(beta / 2.0))
    else:
        kernel = torch.exp(-0.5 * quadratic.pow(beta / 2.0) if shape == "generalised" else -0.5 * quadratic)
    kernel = kernel.float()
    return kernel / kernel.sum()


def sinc_kernel(cutoff: float, size: int) -> torch.Tensor:
    """Circular low-pass (jinc) kernel: the ringing of sharpened or band-limited photos."""
    xs, ys = _grid(size)
    radius = torch.sqrt(xs**2 + ys**2).clamp_min(1e-8)
    bessel = torch.special.bessel_j1(cutoff * radius)
    kernel = cutoff * bessel / (2 * math.pi * radius)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    kernel = kernel.float()
    return kernel / kernel.sum()


def wide_blur_kernel(severity: float, gen: torch.Generator) -> torch.Tensor:
    """A random kernel of the wide family, its spread growing with ``severity``."""
    shape = choice(gen, ("gaussian", "generalised", "plateau", "sinc"), weights=(0.35, 0.25, 0.25, 0.15))
    if shape == "sinc":
        return sinc_kernel(lerp(2.5, 0.6, severity) * uniform(gen, 0.85, 1.15), 2 * randint(gen, 3, 10) + 1)
    spread = lerp(0.8, 4.0, severity)
    sigma_x = spread * uniform(gen, 0.7, 1.2)
    sigma_y = sigma_x * (uniform(gen, 0.3, 1.0) if coin(gen, 0.6) else 1.0)
    beta = uniform(gen, 0.5, 4.0) if shape != "gaussian" else 2.0
    return anisotropic_kernel(sigma_x, sigma_y, uniform(gen, 0.0, math.pi), shape, beta)


def defocus_blur_wide(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    if not coin(gen, WIDE_SHARE):
        return defocus_blur(image, severity, gen)
    return convolve(image, wide_blur_kernel(severity, gen))


SHORTEST_SHAKE, LONGEST_SHAKE = 2.0, 28.0
"""The wide profile's shake lengths in px: from a steady hand's short exposure, a faint softness that the standard
profile (from about 4 px) never draws, to a long one."""


def exposure_shake_length(severity: float, gen: torch.Generator) -> float:
    """A shake length spaced as exposure times are (geometrically), so that faint shake is drawn as often as long."""
    return math.exp(lerp(math.log(SHORTEST_SHAKE), math.log(LONGEST_SHAKE), severity)) * uniform(gen, 0.85, 1.15)


def motion_blur_wide(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    # Exposures from short to longer than the standard profile's, and a slight defocus under the shake as lenses add.
    if coin(gen, WIDE_SHARE):
        # the trajectory kernel, whose length is continuous (the straight kernel's is a whole odd number of px)
        blurred = convolve(image, shake_trajectory_kernel(exposure_shake_length(severity, gen), gen))
    else:
        blurred = motion_blur(image, min(1.0, severity * uniform(gen, 0.8, 1.4)), gen)
    if coin(gen, WIDE_SHARE):
        blurred = convolve(blurred, anisotropic_kernel(*(uniform(gen, 0.4, 1.0),) * 2, 0.0))
    return blurred


def noise_wide(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    if not coin(gen, WIDE_SHARE):
        return gaussian_noise(image, severity, gen)
    # Grey (luminance) noise, or colour noise with unequal channel levels, from faint to heavy.
    sigma = math.exp(lerp(math.log(3.0), math.log(60.0), severity)) / 255.0
    if coin(gen, 0.4):
        return image + sigma * randn((1, 1, *image.shape[-2:]), gen, image)
    levels = torch.tensor([uniform(gen, 0.6, 1.4) for _ in range(3)], dtype=image.dtype, device=image.device)
    return image + sigma * levels.view(1, 3, 1, 1) * randn(image.shape, gen, image)


def jpeg_wide(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    quality = lerp(95.0, 10.0, severity) * uniform(gen, 0.9, 1.1)
    return _jpeg_roundtrip(image, min(95.0, max(8.0, quality)))


def s_curve(display: torch.Tensor, contrast: float) -> torch.Tensor:
    """A camera's S-shaped tone curve on display values in [0, 1] (contrast 1: identity)."""
    toe = display.clamp(0.0, 1.0).pow(contrast)
    return toe / (toe + (1.0 - display.clamp(0.0, 1.0)).pow(contrast)).clamp_min(1e-6)


def low_light_wide(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    if not coin(gen, WIDE_SHARE):
        return low_light(image, severity, gen)
    # Undo sRGB to linear light, under-expose, then the camera's tone curve and noise in the dark.
    linear = image.clamp(0.0, 1.0).pow(2.2)
    stops = lerp(0.7, 6.0, severity) * uniform(gen, 0.85, 1.15)
    exposed = linear * 2.0 ** (-stops)
    shot = math.exp(uniform(gen, math.log(200.0), math.log(4000.0)))
    noisy = exposed + torch.sqrt(exposed.clamp_min(0.0) / shot) * randn(image.shape, gen, image)
    display = s_curve(noisy.clamp(0.0, 1.0).pow(1 / 2.2), uniform(gen, 0.9, 1.3))
    return display + uniform(gen, 0.5, 3.0) / 255.0 * randn(image.shape, gen, image)


def haze_wide(image: torch.Tensor, severity: float, gen: torch.Generator, frame_side: int | None = None
              ) -> torch.Tensor:
    hazy = haze(image, severity, gen, frame_side)
    if not coin(gen, WIDE_SHARE):
        return hazy
    # Coloured airlight (smog, dusk, sea haze): tint what the haze added, keeping the scene's share.
    tint = torch.tensor([uniform(gen, 0.85, 1.1) for _ in range(3)], dtype=image.dtype, device=image.device)
    veil = (hazy - image).clamp_min(0.0)
    return hazy + veil * (tint.view(1, 3, 1, 1) - 1.0)


def camera_finish(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The faint noise and mild compression every real photo carries, drawn per image."""
    if not coin(gen, FINISH_PROBABILITY):
        return image
    sigma = uniform(gen, 0.5, 3.0) / 255.0
    out = image + sigma * randn(image.shape, gen, image)
    if coin(gen, 0.5):
        out = _jpeg_roundtrip(out.clamp(0.0, 1.0), uniform(gen, 70.0, 95.0))
    return out


WIDE_KINDS = {
    "noise": noise_wide,
    "motion_blur": motion_blur_wide,
    "defocus_blur": defocus_blur_wide,
    "jpeg": jpeg_wide,
    "low_light": low_light_wide,
    "haze": haze_wide,
}
"""Kinds whose wide profile differs; the others use their standard model in both profiles."""
