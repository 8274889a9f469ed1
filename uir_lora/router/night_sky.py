"""A photo of the night sky: a dark void (black, or a faint smooth glow such as a nebula) with points of light. The
encoder reads such a photo as snow (the stars are bright specks), as low light (its highlights are too small for a
thumbnail to show) or as a colour cast, and the restore then removes the stars or brightens the sky. This measures how
far a photo is such a sky, so the router can doubt those kinds there (``RouterDefaults.night_sky_kinds``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..global_stage.adapter import ramp

VOID_SIDE = 512
"""The longer side in px the photo is area-shrunk to before its blocks are measured (stars shrink with it, but a
block median ignores them either way)."""
VOID_BLOCK = 8
"""Blocks of 8 x 8 px of that copy: a point of light covers less than half a block, so the block's median is the
sky behind it."""
BLACK_LEVEL = 0.1
"""A block whose median (largest channel) is below this is black sky."""
GLOW_LEVEL = 0.35
GLOW_SPREAD = 0.03
GLOW_FLOOR = 0.1
"""A block whose median is below ``GLOW_LEVEL`` and at most ``GLOW_SPREAD`` above its ``GLOW_FLOOR`` quantile (by
nearest rank among the block's pixels) is sky behind a faint glow (a nebula, the Milky Way, airglow): smooth at the
scale of a block, where a scene has texture. Stars only brighten a block, so the spread is read below its median."""
POINT_POOL = 2
"""Points of light are read at full resolution, averaged over 2 x 2 px so that one hot pixel of sensor noise does
not count as a star."""
POINT_SHARE = 1e-4
"""The level the brightest 0.01 % of those 2 x 2 averages reach: a few dozen px of a 512² photo, which a handful of
stars fill and under-exposure never brightens."""


def void_share(images: torch.Tensor) -> torch.Tensor:
    """[B]: the share of each image [B,3,H,W] that is sky once its points of light are set aside: its blocks whose
    median is below ``BLACK_LEVEL``, or below ``GLOW_LEVEL`` and smooth below it (``GLOW_SPREAD``)."""
    scale = VOID_SIDE / max(images.shape[-2:])
    shrunk = F.interpolate(images.float(), scale_factor=scale, mode="area") if scale < 1 else images.float()
    brightest = shrunk.amax(dim=1, keepdim=True)
    height, width = (side // VOID_BLOCK * VOID_BLOCK for side in brightest.shape[-2:])
    if height == 0 or width == 0:
        return torch.zeros(images.shape[0])
    blocks = F.unfold(brightest[..., :height, :width], VOID_BLOCK, stride=VOID_BLOCK)
    median = blocks.median(dim=1).values
    sky = median < BLACK_LEVEL
    dim = (median < GLOW_LEVEL) & ~sky
    if dim.any():  # only dim blocks can be glow: most photos have few, so the percentile is read on those alone
        rank = 1 + round(GLOW_FLOOR * (blocks.shape[1] - 1))
        floor = blocks.transpose(1, 2)[dim].kthvalue(rank, dim=1).values
        sky[dim] = median[dim] - floor <= GLOW_SPREAD
    return sky.float().mean(dim=1)


def point_level(images: torch.Tensor) -> torch.Tensor:
    """[B]: how bright each image's brightest points are: the level of its brightest ``POINT_SHARE`` of 2 x 2 px
    averages (largest channel), at full resolution, where a star keeps its peak."""
    brightest = images.float().amax(dim=1, keepdim=True)
    pooled = (F.avg_pool2d(brightest, POINT_POOL) if min(brightest.shape[-2:]) >= POINT_POOL else brightest).flatten(1)
    rank = max(1, round(pooled.shape[1] * (1.0 - POINT_SHARE)))
    return pooled.kthvalue(rank, dim=1).values


def night_sky_factors(images: torch.Tensor, void_ends: Sequence[float], point_ends: Sequence[float]) -> torch.Tensor:
    """[B] in [0, 1]: how far each image is a night sky, the ramp of its ``void_share`` between ``void_ends`` times
    the ramp of its ``point_level`` between ``point_ends``. Under-exposure blackens a photo too, but dims its
    brightest points with the rest; a clean night sky keeps them bright."""
    return ramp(void_share(images), void_ends) * ramp(point_level(images), point_ends)
