"""Which noise: shot noise grows with brightness, the other noise does not.

The bank's two noise LoRAs undo the same damage, and their presence heads split one noise between them
(``router.alternatives``), so the heads cannot say which of the two a photo has. The noise itself can:
photon shot noise in the image's own values has a variance proportional to the brightness (Poisson),
additive noise a variance that is the same at every brightness. This module fits var = a + b * level to
the noise of the flattest blocks at each brightness and reports the share of the signal-dependent part at
mid-grey. Shot noise counted in linear light and then gamma-encoded is nearly flat in the image's values:
it reads as additive noise here, and the additive-noise LoRA is the one that fits it.

Written by hand: scikit-image's ``estimate_sigma`` and the usual blind estimators assume one flat noise
level; no maintained library fits a signal-dependent (Poisson-Gaussian) model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLOCK = 8
BINS = 20
"""Brightness bins of width 1 / BINS over 0..1."""
QUANTILE = 0.25
"""Of the block variances in a bin, this quantile: the flattest blocks measure the noise, not the texture."""
MIN_BLOCKS = 16
CLIP_SIGMAS = 1.5
"""A bin counts only when its level +- this many noise deviations stays inside 0..1: clipping at black and
white shrinks the variance there and would bend the fit."""
MIN_SPAN = 0.25
"""The bins used must span at least this much brightness, or the slope is not measured."""
NEGLIGIBLE = (1.0 / 255.0) ** 2
"""Below this variance at mid-grey there is no noise to tell apart (8-bit rounding alone is a twelfth of it)."""
MAX_SIDE = 1024
"""Larger photos are measured on a centred crop of this side: enough blocks, bounded memory."""
SHOT_NOISE = "poisson_noise"
ADDITIVE_NOISE = "noise"


def shot_noise_share(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in 0..1 -> [B]: the share of the noise variance at mid-grey that grows with brightness
    (0: additive noise, 1: pure shot noise); NaN where the photo has too few flat blocks over too narrow a
    range of brightness to tell."""
    height, width = images.shape[-2:]
    top, left = max(0, (height - MAX_SIDE) // 2), max(0, (width - MAX_SIDE) // 2)
    x = images[..., top : top + MAX_SIDE, left : left + MAX_SIDE].clamp(0, 1).float()
    batch = x.shape[0]
    if min(x.shape[-2:]) < BLOCK + 2:
        return torch.full((batch,), math.nan)
    planes = x.reshape(-1, 1, *x.shape[-2:])  # every channel is a sample of the same noise model
    residual = _immerkaer(planes)
    level = F.avg_pool2d(planes, 3, 1)
    variance = F.avg_pool2d(residual * residual, BLOCK).reshape(batch, -1)
    brightness = F.avg_pool2d(level, BLOCK).reshape(batch, -1)
    return torch.tensor([_fit_share(b, v) for b, v in zip(brightness, variance)])


def _immerkaer(planes: torch.Tensor) -> torch.Tensor:
    """Immerkaer's noise operator [[1,-2,1],[-2,4,-2],[1,-2,1]] / 6 as its two second differences (a 3x3
    convolution of one channel is many times slower on a CPU): white noise of variance v gives an output of
    variance v, and planes and gentle curvature cancel, so flat and smoothly shaded blocks keep their noise."""
    across = planes[..., :, :-2] - 2 * planes[..., :, 1:-1] + planes[..., :, 2:]
    return (across[..., :-2, :] - 2 * across[..., 1:-1, :] + across[..., 2:, :]) / 6.0


def _fit_share(brightness: torch.Tensor, variance: torch.Tensor) -> float:
    levels, noise, counts = [], [], []
    which = (brightness * BINS).long().clamp(0, BINS - 1)
    for index in range(BINS):
        chosen = which == index
        if int(chosen.sum()) < MIN_BLOCKS:
            continue
        mean, var = float(brightness[chosen].mean()), float(torch.quantile(variance[chosen], QUANTILE))
        deviation = CLIP_SIGMAS * math.sqrt(max(var, 0.0))
        if mean - deviation < 0.0 or mean + deviation > 1.0:
            continue
        levels.append(mean)
        noise.append(var)
        counts.append(float(chosen.sum()))
    if len(levels) < 3 or max(levels) - min(levels) < MIN_SPAN:
        return math.nan
    weight = torch.tensor(counts).sqrt()[:, None]
    design = torch.tensor([[1.0, level] for level in levels], dtype=torch.float64) * weight
    target = torch.tensor(noise, dtype=torch.float64)[:, None] * weight
    floor, slope = (max(value, 0.0) for value in torch.linalg.lstsq(design, target).solution.flatten().tolist())
    at_mid_grey = floor + 0.5 * slope
    return 0.5 * slope / at_mid_grey if at_mid_grey > NEGLIGIBLE else math.nan


def noise_member(images: torch.Tensor) -> list[str | None]:
    """Per image, which of the two noise LoRAs the noise is: ``poisson_noise`` when most of the variance at
    mid-grey grows with brightness, ``noise`` when most does not, None when it cannot be measured."""
    return [None if math.isnan(share) else SHOT_NOISE if share > 0.5 else ADDITIVE_NOISE
            for share in shot_noise_share(images).tolist()]


ARBITERS = {frozenset((ADDITIVE_NOISE, SHOT_NOISE)): noise_member}
"""Groups of alternatives whose member a measurement of the image can pick (the others: the strongest head)."""
ARBITER_REASONS = {SHOT_NOISE: "the noise's variance grows with brightness (shot noise)",
                   ADDITIVE_NOISE: "the noise's variance does not grow with brightness"}
"""Why a member was picked, for the routing notes."""
