"""Classical, training-free restorations a user would reach for instead of this pack.

Each method maps one [1,3,H,W] image in 0..1 to a restored image of the same shape. Parameters are
common textbook defaults, fixed in advance and never tuned on the evaluation images; kernels that a
real user could not know (blur PSFs) are assumed, not taken from the synthesis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import kornia
import numpy as np
import torch
from scipy import ndimage
from skimage import exposure, restoration

from ...degrade import CANONICAL_ORDER

ClassicalFn = Callable[[torch.Tensor], torch.Tensor]


def _to_numpy(image: torch.Tensor) -> np.ndarray:
    return image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[None].clamp(0, 1)


def estimate_noise_sigma(array: np.ndarray) -> float:
    """Immerkaer's (1996) fast noise estimate, mean over channels; skimage's estimator needs PyWavelets."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    height, width = array.shape[:2]
    sigmas = [np.abs(ndimage.convolve(array[..., c], kernel)[1:-1, 1:-1]).sum() * np.sqrt(np.pi / 2)
              / (6 * (width - 2) * (height - 2)) for c in range(array.shape[2])]
    return float(np.mean(sigmas))


def nl_means(image: torch.Tensor) -> torch.Tensor:
    """Non-local means with the noise level estimated from the image (skimage's recommended h)."""
    array = _to_numpy(image)
    sigma = estimate_noise_sigma(array)
    out = restoration.denoise_nl_means(array, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                       fast_mode=True, channel_axis=-1)
    return _to_tensor(out)


def _gaussian_psf(sigma: float = 1.5, size: int = 9) -> np.ndarray:
    axis = np.arange(size) - size // 2
    kernel = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _deconvolve(image: torch.Tensor, method: Callable[[np.ndarray, np.ndarray], np.ndarray],
                pad: int = 24) -> torch.Tensor:
    """Per-channel deconvolution on a mirror-padded copy: unpadded borders ring and cost several dB."""
    psf = _gaussian_psf()
    array = np.pad(_to_numpy(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.stack([method(array[..., c], psf) for c in range(3)], -1)
    return _to_tensor(out[pad:-pad, pad:-pad])


def richardson_lucy(image: torch.Tensor) -> torch.Tensor:
    """Richardson-Lucy, 15 iterations, with an assumed Gaussian PSF (sigma 1.5): the blind user's guess."""
    return _deconvolve(image, lambda channel, psf: restoration.richardson_lucy(channel, psf, num_iter=15, clip=True))


def wiener(image: torch.Tensor) -> torch.Tensor:
    """Wiener deconvolution with the same assumed Gaussian PSF and a fixed regularisation."""
    return _deconvolve(image, lambda channel, psf: restoration.wiener(channel, psf, balance=0.05, clip=True))


def deblock_bilateral(image: torch.Tensor) -> torch.Tensor:
    """Edge-preserving smoothing of 8x8 blocking and ringing (bilateral, 5x5, colour sigma 0.1)."""
    return kornia.filters.bilateral_blur(image.float(), (5, 5), 0.1, (1.5, 1.5)).clamp(0, 1)


def clahe(image: torch.Tensor) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (skimage defaults)."""
    return _to_tensor(exposure.equalize_adapthist(_to_numpy(image), clip_limit=0.01))


def auto_gamma(image: torch.Tensor) -> torch.Tensor:
    """Global gamma chosen so the mean luminance becomes 0.5 (the usual 'auto brighten')."""
    mean = float(kornia.color.rgb_to_grayscale(image.float()).mean().clamp(1e-3, 0.999))
    gamma = float(np.log(0.5) / np.log(mean))
    return image.float().clamp(1e-6, 1).pow(gamma)


def dark_channel_dehaze(image: torch.Tensor, patch: int = 15, omega: float = 0.95, t0: float = 0.1) -> torch.Tensor:
    """Dark-channel-prior dehazing (He, Sun, Tang 2009) with guided-filter refinement of t.

    Hand-written: no maintained Python library implements it (kornia has the guided filter only).
    """
    array = _to_numpy(image)
    dark = ndimage.minimum_filter(array.min(axis=2), size=patch)
    # top 0.1 % of the dark channel; a stable sort, because the minimum filter leaves plateaus of equal values
    # and the default sort breaks their ties differently on different CPUs (the airlight moved by machine)
    brightest = np.argsort(dark.ravel(), kind="stable")[-max(1, dark.size // 1000):]
    airlight = array.reshape(-1, 3)[brightest].max(axis=0).clip(0.05, 1.0)
    transmission = 1 - omega * ndimage.minimum_filter((array / airlight).min(axis=2), size=patch)
    guide = kornia.color.rgb_to_grayscale(image.float())
    refined = kornia.filters.guided_blur(guide, torch.from_numpy(transmission).float()[None, None], 31, 1e-3)
    t = refined[0, 0].numpy().clip(t0, 1)[..., None]
    return _to_tensor((array - airlight) / t + airlight)


def median(image: torch.Tensor) -> torch.Tensor:
    """5x5 median filter per channel: removes thin streaks, flakes and small drops."""
    return kornia.filters.median_blur(image.float(), (5, 5))


def unsharp(image: torch.Tensor) -> torch.Tensor:
    """Unsharp mask (Gaussian sigma 2, amount 1) on the bicubic-upscaled input.

    kornia's, because skimage 0.26's unsharp_mask returns NaN for float colour images here.
    """
    return kornia.filters.unsharp_mask(image.float(), (9, 9), (2.0, 2.0)).clamp(0, 1)


def gray_world(image: torch.Tensor) -> torch.Tensor:
    """Gray-world white balance: scale each channel so all channel means equal the grey mean."""
    means = image.float().mean(dim=(2, 3), keepdim=True).clamp_min(1e-4)
    return (image.float() * means.mean(dim=1, keepdim=True) / means).clamp(0, 1)


CLASSICAL: dict[str, dict[str, ClassicalFn]] = {
    "noise": {"nl_means": nl_means},
    "poisson_noise": {"nl_means": nl_means},
    "motion_blur": {"richardson_lucy": richardson_lucy, "wiener": wiener},
    "defocus_blur": {"richardson_lucy": richardson_lucy, "wiener": wiener},
    "jpeg": {"bilateral": deblock_bilateral},
    "low_light": {"clahe": clahe, "gamma": auto_gamma},
    "haze": {"dark_channel": dark_channel_dehaze},
    "rain": {"median": median},
    "snow": {"median": median},
    "low_resolution": {"unsharp": unsharp},
    "raindrop": {"median": median},
    "color_cast": {"gray_world": gray_world},
}
"""Kind -> {method name: function}; the first method of a kind is its default in mixtures."""


def classical_methods(kinds: Sequence[str]) -> dict[str, ClassicalFn]:
    """Classical restorations for one kind, or a chain for a mixture.

    A mixture undoes its kinds in reverse physical order (the last degradation applied is removed
    first), each with its kind's default method; the name joins the steps with '+'.
    """
    if len(kinds) == 1:
        return dict(CLASSICAL[kinds[0]])
    order = sorted(kinds, key=CANONICAL_ORDER.index, reverse=True)
    steps = [next(iter(CLASSICAL[kind].items())) for kind in order]

    def chain(image: torch.Tensor) -> torch.Tensor:
        for _, function in steps:
            image = function(image)
        return image

    return {"+".join(name for name, _ in steps): chain}
