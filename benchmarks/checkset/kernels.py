"""Blur kernels of the field's degradation models (BSRGAN, Real-ESRGAN) and camera-shake trajectories.

Every function takes a numpy Generator and returns a float32 kernel that sums to one.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _normalised(kernel: np.ndarray) -> np.ndarray:
    kernel = np.clip(kernel, 0, None).astype(np.float32)
    return kernel / kernel.sum()


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(axis, axis)


def _rotated_quadratic(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """x^T Σ^-1 x for a Gaussian covariance with principal widths sigma_x, sigma_y rotated by ``angle``."""
    xx, yy = _grid(size)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian(rng: np.random.Generator, size: int, sigma: float, anisotropy: float = 1.0) -> np.ndarray:
    """Isotropic (anisotropy 1) or anisotropic Gaussian at a random angle."""
    return _normalised(np.exp(-0.5 * _rotated_quadratic(size, sigma, sigma / anisotropy, rng.uniform(0, np.pi))))


def generalised_gaussian(rng: np.random.Generator, size: int, sigma: float, beta: float) -> np.ndarray:
    """exp(-(x^T Σ^-1 x)^(β/2)): β < 2 gives heavy tails, β > 2 a flatter top (Real-ESRGAN)."""
    q = _rotated_quadratic(size, sigma, sigma / rng.uniform(1.0, 2.0), rng.uniform(0, np.pi))
    return _normalised(np.exp(-0.5 * q ** (beta / 2)))


def plateau(rng: np.random.Generator, size: int, sigma: float, beta: float) -> np.ndarray:
    """1 / (1 + (x^T Σ^-1 x)^(β/2)): a flat top with polynomial tails (Real-ESRGAN's plateau kernel)."""
    q = _rotated_quadratic(size, sigma, sigma / rng.uniform(1.0, 2.0), rng.uniform(0, np.pi))
    return _normalised(1.0 / (1.0 + q ** (beta / 2)))


def sinc(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2-D sinc, jinc) with cutoff in radians per pixel: ringing and overshoot."""
    xx, yy = _grid(size)
    radius = np.hypot(xx, yy)
    radius[radius == 0] = 1e-8
    kernel = cutoff * special.j1(cutoff * radius) / (2 * np.pi * radius)
    kernel[(size - 1) // 2, (size - 1) // 2] = cutoff**2 / (4 * np.pi)
    return (kernel / kernel.sum()).astype(np.float32)


def random_resolution_kernel(rng: np.random.Generator, strength: float) -> tuple[str, np.ndarray]:
    """One of the five kernel families at a width that grows with ``strength`` (about 0.5..3 px)."""
    family = rng.choice(["isotropic", "anisotropic", "generalised", "plateau", "sinc"])
    sigma = strength * rng.uniform(0.8, 1.2)
    size = 2 * int(np.ceil(3 * sigma)) + 1
    if family == "isotropic":
        return family, gaussian(rng, size, sigma)
    if family == "anisotropic":
        return family, gaussian(rng, size, sigma, anisotropy=rng.uniform(1.5, 3.0))
    if family == "generalised":
        return family, generalised_gaussian(rng, size, sigma, beta=rng.uniform(0.5, 4.0))
    if family == "plateau":
        return family, plateau(rng, size, sigma, beta=rng.uniform(1.0, 2.0))
    return family, sinc(max(size, 13), cutoff=np.pi / (1.0 + 1.5 * strength))


def camera_trajectory(rng: np.random.Generator, length: float, samples: int = 2000) -> np.ndarray:
    """A 2-D camera-shake path of total length ``length`` px (Boracchi & Foi's inertial random walk).

    Velocity keeps momentum, is pulled back towards the start and receives random kicks, with rare
    abrupt jerks: this gives the curved, uneven streaks of hand-held exposures, not straight lines.
    """
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity)
    position = np.zeros(2)
    path = [position.copy()]
    for _ in range(samples - 1):
        kick = rng.normal(size=2) * 0.6
        if rng.random() < 0.002:  # an impulsive jerk of the hand
            kick *= 15
        velocity = 0.96 * velocity + 0.04 * kick - 0.002 * position / max(length, 1.0)
        velocity /= max(np.linalg.norm(velocity), 1e-8)
        position = position + velocity
        path.append(position.copy())
    path = np.array(path)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    path *= length / max(steps.sum(), 1e-8)
    return path - path.mean(axis=0)


def trajectory_kernel(path: np.ndarray, exposure_weights: np.ndarray | None = None) -> np.ndarray:
    """Rasterise a path into a PSF with bilinear splatting; ``exposure_weights`` vary the dwell time."""
    extent = int(np.ceil(np.abs(path).max())) + 2
    size = 2 * extent + 1
    kernel = np.zeros((size, size), np.float64)
    weights = np.ones(len(path)) if exposure_weights is None else exposure_weights
    for (x, y), weight in zip(path + extent, weights):
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += weight * (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += weight * fx * (1 - fy)
        kernel[y0 + 1, x0] += weight * (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += weight * fx * fy
    return _normalised(kernel)


def motion(rng: np.random.Generator, length: float) -> np.ndarray:
    """A camera-shake PSF: a random trajectory with uneven speed along the exposure."""
    path = camera_trajectory(rng, length)
    dwell = 1.0 + 0.5 * np.sin(np.linspace(0, rng.uniform(1, 4) * np.pi, len(path)) + rng.uniform(0, np.pi))
    return trajectory_kernel(path, dwell)


def disc(radius: float, supersample: int = 8) -> np.ndarray:
    """A defocus pillbox with anti-aliased rim (the aperture's image), by supersampling."""
    extent = int(np.ceil(radius)) + 1
    size = 2 * extent + 1
    fine = (np.arange(size * supersample) + 0.5) / supersample - size / 2
    xx, yy = np.meshgrid(fine, fine)
    inside = (np.hypot(xx, yy) <= radius).astype(np.float64)
    return _normalised(inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3)))


def line(length: float, angle: float, width: float = 1.0) -> np.ndarray:
    """A straight, thin, anti-aliased line PSF (a falling drop during the exposure)."""
    extent = int(np.ceil(length / 2)) + 2
    xx, yy = _grid(2 * extent + 1)
    along = xx * np.sin(angle) + yy * np.cos(angle)
    across = xx * np.cos(angle) - yy * np.sin(angle)
    kernel = np.exp(-0.5 * (across / (0.5 * width)) ** 2) * (np.abs(along) <= length / 2)
    return _normalised(kernel)
