"""Numpy-side helpers for the alternative degradation models (HxWx3 float64 arrays in [0, 1])."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.signal import fftconvolve

Array = np.ndarray
Rng = np.random.Generator

REC709 = np.array([0.2126, 0.7152, 0.0722])  # differs from the Rec.601 weights used in ``degrade``


def mix(low: float, high: float, amount: float) -> float:
    return low + (high - low) * amount


def luma(picture: Array) -> Array:
    return picture @ REC709


def convolve_rgb(picture: Array, kernel: Array) -> Array:
    """FFT convolution with symmetric (mirror incl. edge) padding, cropped back to size."""
    kernel = kernel / kernel.sum()
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(picture, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="symmetric")
    channels = [fftconvolve(padded[..., c], kernel, mode="valid") for c in range(3)]
    return np.stack(channels, axis=-1)


def resize_channels(picture: Array, height: int, width: int, resample: int) -> Array:
    """PIL resampling per channel in 32-bit float mode (no 8-bit quantisation)."""
    channels = [
        np.asarray(Image.fromarray(picture[..., c].astype(np.float32)).resize((width, height), resample))
        for c in range(picture.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float64)


def mask_to_float(mask_image: Image.Image) -> Array:
    return np.asarray(mask_image, dtype=np.float64) / 255.0


def alpha_over(picture: Array, colour: Array | float, alpha: Array) -> Array:
    """Alpha-composite a flat colour (or image) over the picture with a per-pixel alpha map."""
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    return picture * (1.0 - alpha) + np.asarray(colour) * alpha
