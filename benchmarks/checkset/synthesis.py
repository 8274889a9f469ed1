"""The check set's degradation models: one function per kind, three fixed severities each.

Written apart from the training synthesis (uir_lora/degrade, uir_lora/lab/degrade_alt) and never used for
training, so the check measures damage the bank did not learn from. Images are float32 HxWx3 arrays
in 0..1 (sRGB); every function draws its randomness from the Generator it is given.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage, signal

from . import kernels

SEVERITIES = ("mild", "moderate", "strong")
NOISE_SIGMAS = (15, 30, 50)
"""Gaussian noise σ per severity, in 8-bit levels (a non-blind denoiser may be told it)."""
Degradation = Callable[[np.ndarray, np.random.Generator, int], np.ndarray]


# ---------------------------------------------------------------- helpers

def to_linear(srgb: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted: sensor-proportional light."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055).astype(np.float32)


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per-channel convolution with reflected borders (a photo continues past its frame)."""
    pad = max(kernel.shape) // 2 + 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = signal.fftconvolve(padded, kernel[..., None].astype(np.float32), mode="same", axes=(0, 1))
    return out[pad:-pad, pad:-pad].astype(np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def sensor_noise(image: np.ndarray, rng: np.random.Generator, shot: float, read: float) -> np.ndarray:
    """Heteroscedastic sensor noise in linear light: variance = shot * signal + read^2, per channel."""
    linear = to_linear(image)
    std = np.sqrt(shot * linear + read**2)
    return to_srgb(linear + rng.normal(size=image.shape).astype(np.float32) * std)


# ---------------------------------------------------------------- noise

def white_gaussian_noise(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Additive white Gaussian noise, colour (independent channels) or grey (one field for all)."""
    sigma = NOISE_SIGMAS[level] / 255
    colour = rng.random() < 0.6
    noise = rng.normal(size=image.shape if colour else image.shape[:2] + (1,)).astype(np.float32)
    return image + sigma * noise


def photon_noise(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Photon shot noise: counts ~ Poisson(peak * x); colour or grey (on luminance), as Real-ESRGAN."""
    peak = (80.0, 25.0, 8.0)[level]
    if rng.random() < 0.6:
        return (rng.poisson(image * peak) / peak).astype(np.float32)
    grey = luminance(image)[..., None]
    return image + (rng.poisson(grey * peak) / peak - grey).astype(np.float32)


# ---------------------------------------------------------------- blur

def camera_shake(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Camera shake along a random trajectory, then the faint sensor noise every real exposure carries."""
    length = (8.0, 16.0, 28.0)[level] * rng.uniform(0.85, 1.15)
    blurred = convolve(to_linear(image), kernels.motion(rng, length))  # light adds up in linear space
    return sensor_noise(to_srgb(blurred), rng, shot=rng.uniform(2e-5, 8e-5), read=rng.uniform(5e-4, 1.5e-3))


def out_of_focus(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Out of focus: convolution with the aperture's disc, in linear light, plus faint sensor noise."""
    radius = (2.0, 4.0, 7.0)[level] * rng.uniform(0.9, 1.1)
    blurred = convolve(to_linear(image), kernels.disc(radius))
    return sensor_noise(to_srgb(blurred), rng, shot=rng.uniform(1e-5, 4e-5), read=rng.uniform(3e-4, 8e-4))


def downsampled(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Blur with a random kernel family, downsample, upsample back (the user's bicubic enlargement)."""
    factor = (2, 3, 4)[level]
    _, kernel = kernels.random_resolution_kernel(rng, strength=0.4 * factor)
    height, width = image.shape[:2]
    small_size = (max(8, width // factor), max(8, height // factor))
    down = rng.choice([Image.BICUBIC, Image.BILINEAR, Image.NEAREST])
    up = rng.choice([Image.BICUBIC, Image.BILINEAR])
    channels = [Image.fromarray(c) for c in np.moveaxis(convolve(image, kernel), 2, 0)]  # float "F" images
    small = [c.resize(small_size, down) for c in channels]
    return np.stack([np.asarray(c.resize((width, height), up)) for c in small], -1).astype(np.float32)


# ---------------------------------------------------------------- compression

def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def jpeg_compression(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """PIL's libjpeg at a fixed quality per severity, 4:2:0 or 4:4:4 chroma subsampling."""
    quality = (50, 30, 10)[level]
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, "JPEG", quality=quality, subsampling=int(rng.choice([0, 2])))
    return np.asarray(Image.open(buffer).convert("RGB"), np.float32) / 255


# ---------------------------------------------------------------- light and colour

def camera_curve(linear: np.ndarray, contrast: float, toe: float) -> np.ndarray:
    """A camera-like tone curve on linear light: a shoulder that rolls off highlights and a toe that lifts
    or crushes shadows, normalised so 1 maps to 1."""
    shoulder = linear * (1 + contrast) / (linear + contrast)
    return np.clip(shoulder + toe * shoulder * (1 - shoulder) ** 3, 0, 1)


def underexposure(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Underexposure through a camera pipeline: less light, a tone curve, gamma, amplified sensor noise."""
    exposure = (0.30, 0.15, 0.07)[level] * rng.uniform(0.85, 1.15)
    linear = to_linear(image) * exposure
    gain = 1.0 / exposure  # the ISO gain that would have been needed: noise grows with it
    noisy = linear + rng.normal(size=image.shape).astype(np.float32) * np.sqrt(
        2e-6 * gain * linear + (2e-4 * np.sqrt(gain)) ** 2)
    curved = camera_curve(np.clip(noisy, 0, 1), contrast=rng.uniform(0.6, 2.0), toe=rng.uniform(-0.3, 0.3))
    return np.clip(curved, 0, 1) ** (1 / rng.uniform(2.0, 2.4))


def white_balance_error(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """A wrong white balance: per-channel gains in linear light along warm/cool plus a green/magenta tint."""
    strength = (0.15, 0.30, 0.50)[level]
    temperature = rng.choice([-1.0, 1.0]) * strength * rng.uniform(0.8, 1.2)   # + warm, - cool
    tint = rng.uniform(-0.5, 0.5) * strength                                    # + green, - magenta
    gains = np.exp(np.array([temperature, tint, -temperature], np.float32))
    gains /= gains @ np.array([0.2126, 0.7152, 0.0722], np.float32)          # keeps the exposure
    return to_srgb(to_linear(image) * gains)


# ---------------------------------------------------------------- atmosphere and weather

def depth_proxy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relative scene depth in 0..1 without a depth sensor: far towards the top of the frame and in
    bright, low-texture (sky-like) regions, smoothed, with a random tilt of the horizon."""
    height, width = image.shape[:2]
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    cols = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    vertical = np.clip(rows + rng.uniform(-0.2, 0.2) * cols + rng.uniform(-0.2, 0.2), 0, 1)
    grey = luminance(image)
    texture = ndimage.gaussian_filter(np.abs(ndimage.laplace(grey)), 4)
    skyness = grey * (1 - texture / max(float(texture.max()), 1e-6))
    depth = 0.6 * vertical + 0.4 * ndimage.gaussian_filter(skyness, 8) / max(float(skyness.max()), 1e-6)
    return np.clip(ndimage.gaussian_filter(depth, max(height, width) / 60), 0, 1)


def atmospheric_haze(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Koschmieder's model I = J t + A (1 - t), t = exp(-β d), with a varied airlight colour."""
    beta = (0.7, 1.3, 2.2)[level] * rng.uniform(0.85, 1.15)
    depth = 0.25 + 0.75 * depth_proxy(image, rng)
    transmission = np.exp(-beta * depth)[..., None]
    brightness = rng.uniform(0.75, 1.0)
    tone = rng.choice([np.array([1.0, 1.0, 1.0]), np.array([0.92, 0.96, 1.0]), np.array([1.0, 0.97, 0.9])])
    airlight = (brightness * tone * rng.uniform(0.97, 1.03, 3)).astype(np.float32)
    return image * transmission + airlight * (1 - transmission)


def screen(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Light added by a semi-transparent bright layer (rain streaks, flakes) without clipping."""
    return 1 - (1 - base) * (1 - layer)


def streak_layer(rng: np.random.Generator, shape: tuple[int, int], density: float, length: float, angle: float,
                 width: float, brightness: float) -> np.ndarray:
    """Random drops smeared along the fall direction: one depth layer of rain."""
    drops = (rng.random(shape) < density).astype(np.float32) * rng.uniform(0.5, 1.0, shape).astype(np.float32)
    streaks = signal.fftconvolve(drops, kernels.line(length, angle, width), mode="same")
    return np.clip(streaks * brightness * length / 3, 0, 1)


def rain_streaks(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Two or three streak layers (near: long, wide, sparse; far: short, thin, dense) and a faint veil."""
    density = (0.002, 0.005, 0.010)[level]
    angle = rng.uniform(-0.35, 0.35)
    shape = image.shape[:2]
    scale = min(shape) / 512
    layers = np.zeros(shape, np.float32)
    for depth in range(int(rng.integers(2, 4))):
        near = 1.0 / (1 + depth)
        length = scale * 40 * near * rng.uniform(0.7, 1.3)
        layers = screen(layers, streak_layer(rng, shape, density * (0.5 + depth), length,
                                             angle + rng.uniform(-0.05, 0.05), 1.0 + 1.5 * near * scale,
                                             0.45 * near + 0.25))
    veil = (0.03, 0.06, 0.10)[level]
    hazy = image * (1 - veil) + veil * 0.85
    return screen(hazy, layers[..., None] * np.array([0.95, 0.97, 1.0], np.float32))


def snowfall(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Flake layers: soft discs of several sizes, near ones larger, blurred and slightly smeared."""
    density = (0.0002, 0.0005, 0.0011)[level]
    shape = image.shape[:2]
    scale = min(shape) / 512
    flakes = np.zeros(shape, np.float32)
    fall = rng.uniform(-0.6, 0.6)
    for depth, (radius, blur) in enumerate(((3.0, 1.2), (1.8, 0.7), (1.0, 0.5))):
        seeds = (rng.random(shape) < density * (1 + depth)).astype(np.float32)
        disc = kernels.disc(radius * scale * rng.uniform(0.8, 1.2))
        layer = signal.fftconvolve(seeds, disc / disc.max(), mode="same")
        layer = ndimage.gaussian_filter(layer, blur * scale)
        layer = signal.fftconvolve(layer, kernels.line(3 + 4 * (2 - depth), fall, 1.0), mode="same")
        flakes = np.maximum(flakes, np.clip(layer * (1.0 - 0.2 * depth) * 2.0, 0, 1))
    veil = (0.04, 0.08, 0.14)[level]
    return screen(image * (1 - veil) + veil * 0.9, flakes[..., None])


def lens_raindrops(image: np.ndarray, rng: np.random.Generator, level: int) -> np.ndarray:
    """Water drops on the lens or window: each drop refracts an inverted, shrunken, defocused view of
    the scene around it, with a soft edge and a dark rim; the glass behind is slightly out of focus."""
    count = (8, 18, 35)[level]
    height, width = image.shape[:2]
    scale = min(height, width) / 512
    background = ndimage.gaussian_filter(image, (0.8 * scale, 0.8 * scale, 0))
    seen_through = ndimage.gaussian_filter(image, (4 * scale, 4 * scale, 0))
    out = background.copy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(count):
        radius = rng.uniform(10, 35) * scale
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        squash = rng.uniform(0.7, 1.0)
        top, bottom = int(max(0, cy - radius - 2)), int(min(height, cy + radius + 2))
        left, right = int(max(0, cx - radius - 2)), int(min(width, cx + radius + 2))
        if bottom <= top or right <= left:
            continue
        dy, dx = yy[top:bottom, left:right] - cy, xx[top:bottom, left:right] - cx
        distance = np.hypot(dx, dy / squash) / radius
        alpha = np.clip((1 - distance) * 4, 0, 1)[..., None]          # soft edge
        magnification = rng.uniform(1.5, 3.0)                            # a drop is a strong, inverting lens
        sy = np.clip(cy - dy * magnification, 0, height - 1)
        sx = np.clip(cx - dx * magnification, 0, width - 1)
        refracted = np.stack([ndimage.map_coordinates(seen_through[..., c], [sy, sx], order=1, mode="nearest")
                              for c in range(3)], -1)
        rim = np.exp(-((distance - 0.9) / 0.08) ** 2)[..., None] * 0.25    # total internal reflection at the edge
        highlight = np.exp(-(((dx + 0.35 * radius) ** 2 + (dy + 0.35 * radius) ** 2) / (0.12 * radius) ** 2))
        drop = np.clip(refracted * 1.05 * (1 - rim) + 0.4 * highlight[..., None], 0, 1)
        region = out[top:bottom, left:right]
        out[top:bottom, left:right] = region * (1 - alpha) + drop * alpha
    return out


DEGRADATIONS: dict[str, Degradation] = {
    "noise": white_gaussian_noise,
    "poisson_noise": photon_noise,
    "motion_blur": camera_shake,
    "defocus_blur": out_of_focus,
    "jpeg": jpeg_compression,
    "low_light": underexposure,
    "haze": atmospheric_haze,
    "rain": rain_streaks,
    "snow": snowfall,
    "raindrop": lens_raindrops,
    "low_resolution": downsampled,
    "color_cast": white_balance_error,
}
"""Kind name (the bank's names) -> degradation(image, rng, severity index)."""
