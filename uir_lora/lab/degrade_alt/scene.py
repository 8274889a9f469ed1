"""Alternative scene/illumination models: low light, haze, rain, snow, colour cast."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from ._base import REC709, Array, Rng, alpha_over, luma, mask_to_float, mix

DEVELOPED_SHARE = 1 / 3
"""Share of low-light pictures that a camera has already developed (dim and flat rather than crushed)."""


def low_light(picture: Array, severity: float, rng: Rng) -> Array:
    """Under-exposure, a share of the time as a camera develops it (``_developed``), else raw-like."""
    if rng.random() < DEVELOPED_SHARE:
        return _developed(picture, severity, rng)
    return _raw_underexposure(picture, severity, rng)


def _developed(picture: Array, severity: float, rng: Rng) -> Array:
    """Under-exposure as a camera develops it: its gain wins back part of the lost stops, then an exponential
    film-like shoulder rolls off what is left of the highlights, so the picture comes out dim and flat."""
    linear = np.clip(picture, 0.0, 1.0) ** 2.2
    stops = mix(1.2, 5.5, severity) + rng.uniform(-0.3, 0.3)
    raw = linear * 2.0**-stops
    raw = raw + np.sqrt(raw * rng.uniform(1e-4, 2e-3) + rng.uniform(1e-4, 8e-4) ** 2) * rng.standard_normal(
        picture.shape)
    gained = np.clip(raw, 0.0, None) * 2.0 ** (stops * rng.uniform(0.3, 0.7))
    knee = rng.uniform(0.5, 3.0)  # larger: flatter highlights
    shoulder = (1.0 - np.exp(-knee * gained)) / knee
    return np.clip(shoulder, 0.0, 1.0) ** (1.0 / rng.uniform(2.0, 2.4))


def _raw_underexposure(picture: Array, severity: float, rng: Rng) -> Array:
    """Raw-like under-exposure: exposure cut in linear light, read noise, mis-set black level."""
    linear = np.clip(picture, 0.0, 1.0) ** 2.2
    stops = mix(0.8, 6.5, severity) + rng.uniform(-0.3, 0.3)
    raw = linear * 2.0**-stops
    raw = raw + rng.uniform(0.0003, 0.002) * rng.standard_normal(picture.shape)
    black_error = rng.uniform(-0.001, 0.004)  # >0 crushes shadows, <0 lifts them to grey
    encoded = np.clip(raw - black_error, 0.0, None) ** (1.0 / 2.2)
    if rng.random() < 0.5:
        # Scotopic vision / weak chroma at night: partial desaturation.
        amount = np.full(encoded.shape[:2], rng.uniform(0.2, 0.6))
        encoded = alpha_over(encoded, luma(encoded)[..., None], amount)
    return encoded


def _depth(height: int, width: int, rng: Rng) -> Array:
    """Relative depth in [0, 1]: far at a random horizon point, or along a random tilt."""
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    if rng.random() < 0.6:
        horizon_row, horizon_col = rng.uniform(0.0, 0.4) * height, rng.uniform(0.0, 1.0) * width
        horizon = np.array([horizon_row, horizon_col]) / max(height, width)
        distance = np.hypot(rows - horizon[0], cols - horizon[1])
        return 1.0 - distance / distance.max()
    direction = rng.uniform(-np.pi, np.pi)
    ramp = rows * np.sin(direction) + cols * np.cos(direction)
    return (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)


def haze(picture: Array, severity: float, rng: Rng) -> Array:
    height, width = picture.shape[:2]
    beta = mix(0.4, 2.8, severity) * rng.uniform(0.9, 1.1)
    if rng.random() < 0.25:
        depth = np.full((height, width), rng.uniform(0.5, 1.0))  # homogeneous fog bank
    else:
        depth = 0.2 + 0.8 * ndimage.gaussian_filter(_depth(height, width, rng), 2.0)
    transmission = np.exp(-beta * depth)[..., None]
    warmth = rng.uniform(-0.06, 0.04)
    airlight = rng.uniform(0.65, 0.98) * np.array([1.0 + warmth, 1.0, 1.0 - warmth])
    return picture * transmission + np.clip(airlight, 0.0, 1.0) * (1.0 - transmission)


def rain(picture: Array, severity: float, rng: Rng) -> Array:
    """Rain as antialiased PIL-drawn line segments, blurred, over a slightly darkened scene."""
    height, width = picture.shape[:2]
    area = height * width / 65536.0
    count_max = int(900 * area) + 1
    count = int(mix(60, 900, severity) * area) + 1
    slant = rng.uniform(-0.5, 0.5)
    starts = rng.uniform(0.0, 1.0, size=(count_max, 2)) * [width, height]
    lengths = rng.uniform(0.5, 1.2, size=count_max) * mix(6.0, 40.0, severity) * max(height, width) / 256
    jitter = slant + rng.uniform(-0.05, 0.05, size=count_max)
    shades = rng.integers(110, 256, size=count_max)
    layer = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(layer)
    for (x0, y0), length, tilt, shade in zip(starts[:count], lengths, jitter, shades, strict=False):
        end = (x0 + length * np.sin(tilt), y0 + length * np.cos(tilt))
        pen.line([(x0, y0), end], fill=int(shade), width=1 if shade < 200 else 2)
    streaks = mask_to_float(layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.1))))
    dimmed = picture * rng.uniform(0.8, 1.0)
    return alpha_over(dimmed, rng.uniform(0.8, 1.0), streaks * mix(0.4, 0.9, severity))


def snow(picture: Array, severity: float, rng: Rng) -> Array:
    """Snow as PIL-drawn ellipses in two size classes, plus a desaturating white fog."""
    height, width = picture.shape[:2]
    area = height * width / 65536.0
    flakes = np.zeros((height, width))
    for scale, blur, base in ((1.0, 0.6, 500), (3.5, 1.8, 40)):
        # Draw for the densest case so severity only changes how many flakes are kept.
        count_max = int(base * area) + 1
        count = int(mix(0.2, 1.0, severity) * base * area) + 1
        centres = rng.uniform(0.0, 1.0, size=(count_max, 2)) * [width, height]
        radii = rng.uniform(0.4, 1.0, size=(count_max, 2)) * scale * max(height, width) / 256 + 0.5
        shades = rng.integers(170, 256, size=count_max)
        layer = Image.new("L", (width, height), 0)
        pen = ImageDraw.Draw(layer)
        for (cx, cy), (rx, ry), shade in zip(centres[:count], radii, shades, strict=False):
            pen.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(shade))
        flakes = np.maximum(flakes, mask_to_float(layer.filter(ImageFilter.GaussianBlur(blur))))
    fog = mix(0.05, 0.3, severity) * rng.uniform(0.5, 1.0)
    grey = luma(picture)[..., None]
    muted = picture + 0.3 * (grey - picture)
    foggy = alpha_over(muted, rng.uniform(0.85, 1.0), np.full((height, width), fog))
    return alpha_over(foggy, 1.0, flakes * mix(0.7, 1.0, severity))


def color_cast(picture: Array, severity: float, rng: Rng) -> Array:
    """Random 3x3 colour-mixing matrix near identity, optionally with per-channel gamma."""
    strength = mix(0.05, 0.3, severity)
    matrix = np.eye(3) + strength * rng.normal(0.0, 1.0, size=(3, 3)) * rng.uniform(0.7, 1.0)
    matrix = np.clip(matrix, -0.3, None)
    # Keep the brightness of white: only the hue balance changes.
    matrix /= (matrix @ np.ones(3)) @ REC709
    mixed = picture @ matrix.T
    if rng.random() < 0.4:
        gammas = 1.0 + strength * rng.uniform(-1.0, 1.0, size=3)
        mixed = np.clip(mixed, 0.0, None) ** gammas
    return mixed
