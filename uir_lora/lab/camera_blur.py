"""A third training synthesis of motion and defocus blur, through a camera's pipeline, from other models than
``uir_lora.degrade`` and ``uir_lora.lab.degrade_alt`` (which both blur the finished sRGB picture and stop there).

A camera blurs light, not display values, and a photo's blur then passes the rest of the camera:
- **Linear light**: the picture is taken back to linear light (sRGB), its highlights extended past the clip a
  photo recorded (a lamp is brighter than the white it was stored as), blurred there, and clipped again: a light
  smears into a bright streak or disc, where a blur of display values leaves a grey one.
- **Motion**: camera shake after Boracchi and Foi's model (IEEE TIP 2012): a trajectory with inertia, small
  Gaussian changes of velocity and rare impulsive jerks, sampled finely and splatted onto the kernel's grid;
  the exposure records a random part of it, so kernels range from near-straight to tangled.
- **Defocus**: a lens's disc with a brighter rim (spherical aberration's ring bokeh) or a softer one, cut at one
  side for the cat's-eye shape off the optical axis.
- **Sensor**: shot and read noise counted in linear light, the faint noise a blurred photo carries; then back
  to sRGB and the camera's sharpening (an unsharp mask), which puts halos on the blurred edges.

Written by hand: no library draws camera shake or runs a camera pipeline in torch. Training only (``lab``); the
runtime never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_linear_rgb
from kornia.filters import unsharp_mask

from ..degrade._common import coin, convolve, each_image, lerp, rand, randn, uniform

KINDS: tuple[str, ...] = ("motion_blur", "defocus_blur")

CLIPPED = 0.95
"""Linear light from which a recorded pixel counts as clipped (sRGB 0.98)."""
SUBSTEPS = 8
"""Samples of the trajectory per pixel of its length: a splatted path with no gaps."""


def shake_kernel(length: float, gen: torch.Generator) -> torch.Tensor:
    """A normalised [k,k] kernel of a camera-shake path of about ``length`` px (Boracchi and Foi's random motion:
    velocity with inertia, Gaussian changes and impulsive jerks, speed up to a maximum), splatted bilinearly. The
    exposure records time, not distance: where the hand slows, the kernel is brighter (a faint ghost of the scene
    beside a sharper copy, as often as an even smear)."""
    steps = max(16, int(length * SUBSTEPS))
    jerk_chance, anxiety = uniform(gen, 0.0, 0.08), uniform(gen, 0.05, 0.35)
    angle = uniform(gen, 0.0, 2 * math.pi)
    velocity = torch.tensor([math.cos(angle), math.sin(angle)]) * uniform(gen, 0.2, 1.0)
    position, points = torch.zeros(2), [torch.zeros(2)]
    for _ in range(steps):
        change = randn((2,), gen, velocity) * anxiety
        if coin(gen, jerk_chance):  # a jerk: the hand reverses part of the way
            change = change - 2 * velocity * uniform(gen, 0.3, 1.0)
        velocity = velocity + change
        velocity = velocity / velocity.norm().clamp_min(1.0)  # a hand's top speed
        position = position + velocity
        points.append(position.clone())
    path = torch.stack(points)
    # the exposure records a part of the shake: most of it, from a random start
    keep = max(2, int(len(path) * uniform(gen, 0.6, 1.0)))
    start = int(rand((1,), gen, path) * (len(path) - keep + 1))
    path = path[start:start + keep]
    path = path - path.mean(dim=0)
    extent = float((path.max(dim=0).values - path.min(dim=0).values).max())
    path = path * (length / max(extent, 1e-6))  # the kernel's larger side spans ``length`` px
    size = 2 * math.ceil(float(path.abs().max()) + 1) + 1
    return _splat(*_time_samples(path + size // 2), size)


def _time_samples(path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points every quarter pixel or closer along a path of equal time steps, each weighted by the time it stands
    for: a slow stretch (short steps) gathers as much light as a fast one (long steps)."""
    starts, segments = path[:-1], path[1:] - path[:-1]
    pieces = (segments.norm(dim=1) / 0.25).ceil().clamp_min(1).long()
    owner = torch.repeat_interleave(torch.arange(len(segments)), pieces)
    offset = torch.cat([torch.arange(int(n)) for n in pieces]).float()
    fraction = ((offset + 0.5) / pieces[owner].float())[:, None]
    return starts[owner] + fraction * segments[owner], 1.0 / pieces[owner].float()


def _splat(points: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear splat of [N,2] (x, y) points with [N] weights on a [size,size] grid, normalised to sum 1."""
    kernel = torch.zeros(size * size)
    base = points.floor()
    frac = points - base
    for dy in (0, 1):
        for dx in (0, 1):
            share = (frac[:, 1] if dy else 1 - frac[:, 1]) * (frac[:, 0] if dx else 1 - frac[:, 0])
            rows = (base[:, 1] + dy).long().clamp(0, size - 1)
            cols = (base[:, 0] + dx).long().clamp(0, size - 1)
            kernel.index_add_(0, rows * size + cols, share * weights)
    kernel = kernel.view(size, size)
    return kernel / kernel.sum()


def lens_kernel(radius: float, gen: torch.Generator) -> torch.Tensor:
    """A defocused lens's disc of ``radius`` px: rim brighter (ring bokeh) or softer than the middle, and cut at
    one side (cat's eye) on some draws; normalised."""
    half = math.ceil(radius + 1)
    coords = torch.arange(-half, half + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    distance = torch.sqrt(xs ** 2 + ys ** 2)
    inside = (radius + 0.5 - distance).clamp(0.0, 1.0)
    rim = uniform(gen, -0.6, 1.2)  # > 0: a bright ring; < 0: a soft edge
    profile = (1.0 + rim * (distance / max(radius, 1e-6)) ** 4).clamp_min(0.05)
    kernel = inside * profile
    if coin(gen, 0.3):
        angle = uniform(gen, 0.0, 2 * math.pi)
        shift = radius * uniform(gen, 0.5, 1.2)
        other = torch.sqrt((xs - shift * math.cos(angle)) ** 2 + (ys - shift * math.sin(angle)) ** 2)
        kernel = kernel * (radius * 1.1 + 0.5 - other).clamp(0.0, 1.0)
    if float(kernel.sum()) <= 0:
        kernel = inside
    return kernel / kernel.sum()


def _extend_highlights(linear: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Recorded whites were clipped: give the clipped pixels back some of the light they lost."""
    clipped = (linear.amax(dim=1, keepdim=True) >= CLIPPED).to(linear.dtype)
    return linear * (1.0 + uniform(gen, 0.0, 4.0) * clipped)


def _sensor_noise(linear: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Faint shot and read noise in linear light (a well-lit photo's: thousands of photons)."""
    photons = math.exp(uniform(gen, math.log(3000.0), math.log(30000.0)))
    read = uniform(gen, 0.0, 0.002)
    deviation = torch.sqrt(linear.clamp_min(0.0) / photons + read ** 2)
    return linear + deviation * randn(linear.shape, gen, linear)


def _sharpen(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """In-camera sharpening on most photos: an unsharp mask of 0.6-1.5 px, amount up to 1."""
    if not coin(gen, 0.7):
        return image
    sigma, amount = uniform(gen, 0.6, 1.5), uniform(gen, 0.2, 1.0)
    size = 2 * math.ceil(3 * sigma) + 1
    sharpened = unsharp_mask(image, (size, size), torch.tensor([[sigma, sigma]], dtype=image.dtype))
    return image + amount * (sharpened - image)


def camera_motion_blur(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """Camera shake of 2-28 px through the camera, [1,3,H,W] in [0, 1]."""
    length = lerp(2.0, 28.0, severity) * uniform(gen, 0.85, 1.15)
    return _through_camera(image, shake_kernel(length, gen), gen)


def camera_defocus_blur(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    """A lens's disc of radius 1-6.5 px through the camera, [1,3,H,W] in [0, 1]."""
    radius = lerp(1.0, 6.5, severity) * uniform(gen, 0.9, 1.1)
    return _through_camera(image, lens_kernel(radius, gen), gen)


def _through_camera(image: torch.Tensor, kernel: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    linear = _extend_highlights(rgb_to_linear_rgb(image.clamp(0.0, 1.0)), gen)
    blurred = _sensor_noise(convolve(linear, kernel), gen)
    return _sharpen(linear_rgb_to_rgb(blurred.clamp(0.0, 1.0)), gen).clamp(0.0, 1.0)


def camera_sharp(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[N,3,H,W] through the same camera in focus and held still (its noise and sharpening only): a clean photo
    as this camera takes it, so its finish alone does not say blur."""
    return torch.cat([_through_camera(single, torch.ones(1, 1), gen) for single in image.float().split(1)]
                     ).to(image.dtype)


_MODELS = {"motion_blur": camera_motion_blur, "defocus_blur": camera_defocus_blur}


def degrade_camera_blur(image: torch.Tensor, kind: str, gen: torch.Generator,
                        severities: Sequence[float] | None = None) -> torch.Tensor:
    """``kind`` on every image of a [N,3,H,W] batch in [0, 1], each with its own severity (drawn when None)."""
    if kind not in _MODELS:
        raise ValueError(f"the camera blur synthesis draws {KINDS}, not {kind!r}")
    return each_image(image, gen, severities, _MODELS[kind])
