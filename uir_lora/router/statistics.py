"""Hand-made degradation statistics that complement the router's frozen CNN features.

The EfficientNet-Lite0 features (router/encoder.py) are per-channel averages over a crop: they see
*that* detail or contrast is gone, hardly *how* (docs/router.md: motion blur was taken for defocus
or lost resolution, mild noise for Poisson noise, vignetting for a global darkening). These numbers
are the classic measurements that separate those cases, all closed-form and frozen (nothing here is
learned, so the router's encoder stays a fixed pretrained map):

- the radial power spectrum (blur, lost resolution and noise each shape it differently) and its
  angular profile, sorted so it does not depend on the direction (motion blur removes one direction);
- JPEG blockiness (differences across the 8 px grid against the others) and flat runs (pixelation);
- noise level per channel and in dark against bright regions (Immerkaer's operator: signal-dependent
  Poisson noise grows with brightness, Gaussian noise does not);
- tone and colour: luminance percentiles, channel means, saturation, dark channel (haze), clipping;
- spatial layout: brightness and contrast on a 3x3 grid (vignetting, haze depth, uneven light);
- impulse outliers against their 8 neighbours (snow, salt and pepper).

No library computes this set (kornia and scikit-image have the filters, not the statistics), so the
few lines each live here, vectorised over a batch.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

VERSION = 1
"""Bump when any statistic changes: router feature caches are keyed by it."""
RADIAL_BINS = 16
ANGLE_BINS = 12
ANGLE_BANDS = ((0.06, 0.16), (0.16, 0.36))  # cycles per pixel
PERCENTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
GRID = 3
EPS = 1e-6
_LUMA = (0.299, 0.587, 0.114)


@functools.lru_cache(maxsize=1)
def statistics_dim() -> int:
    """Length of ``degradation_statistics``' output per image (measured once, so it cannot drift from it)."""
    return degradation_statistics(torch.zeros(1, 3, 32, 32)).shape[1]


def _luma(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.clamp_min(EPS))


def _spectrum(gray: torch.Tensor) -> torch.Tensor:
    """Radial log power (relative to the total) and the sorted angular log profile in two bands."""
    batch, _, height, width = gray.shape
    window = torch.outer(torch.hann_window(height, periodic=False, dtype=gray.dtype),
                         torch.hann_window(width, periodic=False, dtype=gray.dtype))
    centred = (gray[:, 0] - gray.mean(dim=(1, 2, 3))[:, None, None]) * window
    power = torch.fft.rfft2(centred).abs().square()  # [B, H, W//2+1]
    fy = torch.fft.fftfreq(height, dtype=gray.dtype)[:, None].expand(height, width // 2 + 1)
    fx = torch.fft.rfftfreq(width, dtype=gray.dtype)[None, :].expand(height, width // 2 + 1)
    radius = torch.sqrt(fx.square() + fy.square())
    angle = torch.atan2(fy, fx).remainder(math.pi)  # direction of the frequency, 0..pi
    flat_power = power.reshape(batch, -1)
    total = flat_power[:, (radius > 0).flatten()].sum(dim=1, keepdim=True)

    def binned(index: torch.Tensor, valid: torch.Tensor, bins: int) -> torch.Tensor:
        index = torch.where(valid, index, torch.full_like(index, bins)).flatten()
        sums = torch.zeros(batch, bins + 1, dtype=gray.dtype).index_add_(1, index, flat_power)
        counts = torch.bincount(index, minlength=bins + 1).clamp_min(1).to(gray.dtype)
        return (sums / counts)[:, :bins]

    edges = torch.logspace(math.log10(0.02), math.log10(0.5), RADIAL_BINS + 1, dtype=gray.dtype)
    radial_index = (torch.bucketize(radius, edges) - 1).clamp_min(0)
    radial = binned(radial_index, (radius >= edges[0]) & (radius <= 0.5), RADIAL_BINS)
    parts = [_log(radial) - _log(total / flat_power.shape[1])]
    angle_index = (angle / math.pi * ANGLE_BINS).long().clamp_max(ANGLE_BINS - 1)
    for low, high in ANGLE_BANDS:
        profile = binned(angle_index, (radius >= low) & (radius < high), ANGLE_BINS)
        profile = _log(profile / profile.sum(dim=1, keepdim=True).clamp_min(EPS))
        parts.append(profile.sort(dim=1, descending=True).values)
    return torch.cat(parts, dim=1)


def _blocks(gray: torch.Tensor) -> torch.Tensor:
    """Per axis: log of (largest / median) mean absolute difference over the 8 phases of the pixel grid
    (JPEG's block edges, wherever the crop starts), and the share of exactly flat neighbours."""
    out = []
    for diff in (gray[..., :, 1:] - gray[..., :, :-1], gray[..., 1:, :] - gray[..., :-1, :]):
        along = diff.abs().mean(dim=2 if diff.shape[-1] < gray.shape[-1] else 3)[:, 0]  # [B, L]
        length = along.shape[1] // 8 * 8
        phases = along[:, :length].reshape(len(along), -1, 8).mean(dim=1)
        out.append(_log(phases.max(dim=1).values) - _log(phases.median(dim=1).values))
        out.append(_log((diff.abs() < 0.5 / 255).float().mean(dim=(1, 2, 3))))
    return torch.stack(out, dim=1)


def _laplacian_difference(x: torch.Tensor) -> torch.Tensor:
    """|x * [[1,-2,1],[-2,4,-2],[1,-2,1]]| (Immerkaer's noise operator), as its two separable 1-D passes."""
    rows = x[..., :, :-2] - 2 * x[..., :, 1:-1] + x[..., :, 2:]
    return (rows[..., :-2, :] - 2 * rows[..., 1:-1, :] + rows[..., 2:, :]).abs()


def _noise(images: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Immerkaer's fast noise estimate per channel and (median, robust to edges) on chroma, and its
    mean on the darkest against the brightest third of the pixels."""
    scale = math.sqrt(math.pi / 2) / 6
    per_channel = _log(_laplacian_difference(images).mean(dim=(2, 3)) * scale)
    chroma = torch.cat([images[:, 0:1] - images[:, 1:2], images[:, 2:3] - images[:, 1:2]], dim=1)
    per_chroma = _log(_laplacian_difference(chroma).flatten(2).median(dim=2).values * scale)
    response = _laplacian_difference(gray).flatten(1)
    level = gray[..., 1:-1, 1:-1].flatten(1)
    low, high = torch.quantile(_subsampled(level), level.new_tensor([1 / 3, 2 / 3]), dim=1)
    dark, bright = (level <= low[:, None]).float(), (level >= high[:, None]).float()
    dark_level = (response * dark).sum(dim=1) / dark.sum(dim=1).clamp_min(1)
    bright_level = (response * bright).sum(dim=1) / bright.sum(dim=1).clamp_min(1)
    return torch.cat([per_channel, per_chroma,
                      torch.stack([_log(dark_level * scale), _log(bright_level) - _log(dark_level)], dim=1)], dim=1)


def _subsampled(flat: torch.Tensor, step: int = 4) -> torch.Tensor:
    """Every ``step``-th value: percentiles of a 50k-pixel crop need no full sort."""
    return flat[:, ::step]


def _tone(images: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    percentiles = torch.quantile(_subsampled(gray.flatten(1)), gray.new_tensor(PERCENTILES), dim=1).T
    std, mean = torch.std_mean(images.flatten(2), dim=2)
    chromaticity = torch.stack([_log(mean[:, 0]) - _log(mean[:, 1]), _log(mean[:, 2]) - _log(mean[:, 1])], dim=1)
    high, low = images.max(dim=1).values, images.min(dim=1).values
    saturation = ((high - low) / high.clamp_min(EPS)).mean(dim=(1, 2))
    dark_channel = -F.max_pool2d(-low[:, None], 15, stride=15)  # He et al.'s haze prior, per 15 px patch
    clipped = torch.stack([(high > 0.98).float().mean(dim=(1, 2)), (low < 0.02).float().mean(dim=(1, 2))], dim=1)
    return torch.cat([percentiles, mean, _log(std), chromaticity, saturation[:, None],
                      dark_channel.mean(dim=(1, 2, 3))[:, None], _log(clipped + 1e-3)], dim=1)


def _layout(gray: torch.Tensor) -> torch.Tensor:
    """Brightness and contrast of a 3x3 grid of regions, relative to the whole crop."""
    mean = F.adaptive_avg_pool2d(gray, GRID).flatten(1)
    square = F.adaptive_avg_pool2d(gray.square(), GRID).flatten(1)
    contrast = (square - mean.square()).clamp_min(0).sqrt()
    whole_mean = gray.mean(dim=(1, 2, 3))[:, None]
    whole_std = gray.std(dim=(1, 2, 3))[:, None]
    return torch.cat([_log(mean) - _log(whole_mean), _log(contrast) - _log(whole_std)], dim=1)


def _impulses(gray: torch.Tensor) -> torch.Tensor:
    """Share of pixels far above / below the mean of their 8 neighbours (isolated bright or dark dots)."""
    box = F.avg_pool2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    delta = (gray - box) * 9 / 8  # pixel minus the mean of its neighbours
    return _log(torch.stack([(delta > 0.25).float().mean(dim=(1, 2, 3)),
                             (delta < -0.25).float().mean(dim=(1, 2, 3))], dim=1) + 1e-4)


@torch.inference_mode()
def degradation_statistics(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in 0..1 -> [B, statistics_dim()] float32 (H, W >= 16)."""
    images = images.float().clamp(0, 1)
    gray = _luma(images)
    parts = [_spectrum(gray), _blocks(gray), _noise(images, gray), _tone(images, gray), _layout(gray),
             _impulses(gray)]
    return torch.cat(parts, dim=1)
