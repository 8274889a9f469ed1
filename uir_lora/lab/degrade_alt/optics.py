"""Alternative optics models: drawn motion paths, aperture-shaped defocus, drawn lens drops."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

from ._base import Array, Rng, convolve_rgb, mix, resize_channels


def _line_kernel(length: float, angle: float) -> Array:
    """Anti-aliased straight stroke drawn with skimage (Wu's algorithm)."""
    size = int(np.ceil(length)) | 1
    centre = size // 2
    half = (length - 1.0) / 2.0
    dy, dx = half * np.sin(angle), half * np.cos(angle)
    rows, cols, values = draw.line_aa(
        int(round(centre - dy)), int(round(centre - dx)), int(round(centre + dy)), int(round(centre + dx))
    )
    kernel = np.zeros((size, size))
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    kernel[rows[inside], cols[inside]] = np.maximum(kernel[rows[inside], cols[inside]], values[inside])
    return kernel


def _curve_kernel(length: float, rng: Rng) -> Array:
    """Curved shake path: a quadratic Bezier stroke, softened to hide its integer rasterisation."""
    size = int(np.ceil(length)) | 1
    last = size - 1
    ends = rng.integers(0, size, size=4)
    bend = rng.integers(0, size, size=2)
    # Pin opposite borders so the stroke really spans the requested length.
    if rng.random() < 0.5:
        ends[0], ends[2] = 0, last
    else:
        ends[1], ends[3] = 0, last
    weight = rng.uniform(0.5, 3.0)
    rows, cols = draw.bezier_curve(ends[0], ends[1], bend[0], bend[1], ends[2], ends[3], weight)
    kernel = np.zeros((size, size))
    kernel[np.clip(rows, 0, last), np.clip(cols, 0, last)] = 1.0
    return ndimage.gaussian_filter(kernel, 0.6)


def motion_blur(picture: Array, severity: float, rng: Rng) -> Array:
    length = max(3.0, mix(4.0, 30.0, severity) * rng.uniform(0.85, 1.15))
    if rng.random() < 0.6:
        kernel = _line_kernel(length, rng.uniform(0.0, np.pi))
    else:
        kernel = _curve_kernel(length, rng)
    return convolve_rgb(picture, kernel)


def _aperture_kernel(radius: float, blades: int, rotation: float) -> Array:
    """Polygonal iris (5-8 blades) as real lenses produce when stopped down."""
    size = 2 * int(np.ceil(radius)) + 1
    centre = size // 2
    angles = rotation + np.arange(blades) * 2.0 * np.pi / blades
    corner_rows, corner_cols = centre + radius * np.sin(angles), centre + radius * np.cos(angles)
    rows, cols = draw.polygon(corner_rows, corner_cols, (size, size))
    kernel = np.zeros((size, size))
    kernel[rows, cols] = 1.0
    kernel[centre, centre] = 1.0
    return kernel


def defocus_blur(picture: Array, severity: float, rng: Rng) -> Array:
    variant = rng.choice(["disk", "aperture", "gaussian"], p=[0.4, 0.3, 0.3])
    radius = mix(1.2, 6.5, severity) * rng.uniform(0.9, 1.1)
    if variant == "gaussian":
        sigma = mix(0.8, 4.5, severity) * rng.uniform(0.9, 1.1)
        return ndimage.gaussian_filter(picture, sigma=(sigma, sigma, 0), mode="mirror")
    if variant == "aperture":
        return convolve_rgb(picture, _aperture_kernel(radius, int(rng.integers(5, 9)), rng.uniform(0, np.pi)))
    size = 2 * int(np.ceil(radius)) + 1
    kernel = np.zeros((size, size))
    kernel[draw.disk((size // 2, size // 2), radius + 0.5, shape=(size, size))] = 1.0
    return convolve_rgb(picture, kernel)


def _drop_patch(blurred: Array, top: int, left: int, box_h: int, box_w: int, rng: Rng) -> Array:
    """What a drop shows: a magnified, upside-down view of the blurred scene a bit above it."""
    height, width = blurred.shape[:2]
    zoom = rng.uniform(1.2, 2.2)
    src_h, src_w = max(2, int(box_h / zoom)), max(2, int(box_w / zoom))
    src_top = int(np.clip(top + box_h / 2 - src_h / 2 - rng.uniform(0.0, 1.5) * box_h, 0, height - src_h))
    src_left = int(np.clip(left + box_w / 2 - src_w / 2, 0, width - src_w))
    patch = blurred[src_top : src_top + src_h, src_left : src_left + src_w][::-1]
    return resize_channels(np.ascontiguousarray(patch), box_h, box_w, Image.Resampling.BILINEAR)


def raindrop(picture: Array, severity: float, rng: Rng) -> Array:
    height, width = picture.shape[:2]
    side = min(height, width)
    blurred = ndimage.gaussian_filter(picture, sigma=(side * 0.02, side * 0.02, 0), mode="nearest")
    count_max = 18
    count = max(1, int(round(mix(2, count_max, severity))))
    centres = rng.uniform(0.0, 1.0, size=(count_max, 2)) * [height, width]
    radii = side * rng.uniform(0.025, 0.075, size=(count_max, 2)) * mix(0.8, 1.3, severity)
    tilts = rng.uniform(-np.pi / 4, np.pi / 4, size=count_max)
    out = picture.copy()
    for (cy, cx), (ry, rx), tilt in zip(centres[:count], radii[:count], tilts[:count], strict=True):
        mask = np.zeros((height, width))
        rows, cols = draw.ellipse(cy, cx, max(ry, 1.0), max(rx, 1.0), shape=(height, width), rotation=tilt)
        if rows.size == 0:
            continue
        mask[rows, cols] = 1.0
        mask = ndimage.gaussian_filter(mask, max(0.7, 0.2 * min(ry, rx)))
        top, left = rows.min(), cols.min()
        box_h, box_w = rows.max() - top + 1, cols.max() - left + 1
        region = (slice(top, top + box_h), slice(left, left + box_w))
        alpha = mask[region][..., None]
        patch = _drop_patch(blurred, top, left, box_h, box_w, rng) * rng.uniform(0.95, 1.2)
        out[region] = out[region] * (1.0 - alpha) + patch * alpha
    return out
