"""Alternative sensor-side models: Gaussian noise, Poisson noise, JPEG, low resolution."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ._base import Array, Rng, mix, resize_channels

# Full-range BT.601 YCbCr <-> RGB, used to draw noise with separate luma/chroma strength.
_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def gaussian_noise(picture: Array, severity: float, rng: Rng) -> Array:
    # Log-spaced sigma 3..55 (of 255): a different distribution from the linear 5..50 of ``degrade``.
    sigma = 3.0 * (55.0 / 3.0) ** severity / 255.0
    variant = rng.choice(["rgb", "ycc", "per_channel"], p=[0.4, 0.35, 0.25])
    if variant == "ycc":
        strengths = np.array([1.0, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)])
        ycc_noise = rng.standard_normal(picture.shape) * strengths
        noise = ycc_noise @ _YCC_TO_RGB.T
        noise *= 1.0 / np.sqrt((_YCC_TO_RGB**2 @ strengths**2).mean())
    elif variant == "per_channel":
        noise = rng.standard_normal(picture.shape) * rng.uniform(0.7, 1.3, size=3)
    else:
        noise = rng.standard_normal(picture.shape)
    return picture + sigma * noise


def poisson_noise(picture: Array, severity: float, rng: Rng) -> Array:
    clean = np.clip(picture, 0.0, 1.0)
    if rng.random() < 0.5:
        # Photon counting happens on linear light, so undo/redo a display gamma around it.
        peak = 300.0 * (10.0 / 300.0) ** severity
        linear = clean**2.2
        counted = rng.poisson(linear * peak) / peak
        return np.clip(counted, 0.0, None) ** (1.0 / 2.2)
    # Heteroscedastic Gaussian approximation (Foi et al.): var = a * x + b.
    peak = 150.0 * (4.0 / 150.0) ** severity
    floor = mix(0.5, 12.0, severity * rng.uniform(0.5, 1.0)) / 255.0
    std = np.sqrt(clean / peak + floor**2)
    return clean + std * rng.standard_normal(picture.shape)


def jpeg(picture: Array, severity: float, rng: Rng) -> Array:
    """Real libjpeg round-trip via PIL, quality 55..8 and random chroma subsampling."""
    quality = int(np.clip(round(mix(55.0, 8.0, severity) + rng.uniform(-3.0, 3.0)), 2, 95))
    subsampling = int(rng.choice([0, 1, 2], p=[0.2, 0.3, 0.5]))  # 4:4:4, 4:2:2, 4:2:0
    pixels = np.clip(np.round(picture * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64) / 255.0


_DOWN_FILTERS = (
    Image.Resampling.NEAREST,
    Image.Resampling.BOX,
    Image.Resampling.BILINEAR,
    Image.Resampling.HAMMING,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
)
_UP_FILTERS = (Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BILINEAR)


def low_resolution(picture: Array, severity: float, rng: Rng) -> Array:
    height, width = picture.shape[:2]
    factor = mix(1.8, 4.5, severity) * rng.uniform(0.93, 1.07)
    small_h, small_w = max(1, int(height / factor)), max(1, int(width / factor))
    down = _DOWN_FILTERS[rng.integers(len(_DOWN_FILTERS))]
    up = _UP_FILTERS[rng.integers(len(_UP_FILTERS))]
    small = resize_channels(picture, small_h, small_w, down)
    return resize_channels(small, height, width, up)
