"""Procedural night skies: a black sky, points of light of a telescope's blur and a power law of brightness, and on
some a faint coloured nebula. No photograph of the project shows one (the check set's Hubble picture is reserved),
so the night-sky rule of the router (router/night_sky.py) is measured on these."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def star_field(seed: int, side: int = 512, nebula: bool = True) -> torch.Tensor:
    """[1,3,side,side] in 0..1, drawn from ``seed``: 200-3,200 stars (Gaussian profiles of 0.6-1.4 px, a few
    saturating), sensor noise of 1/255, and with ``nebula`` smooth colour clouds up to about half of full scale."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    sky = torch.zeros(1, 3, side, side)
    if nebula:
        clouds = F.interpolate(draw(1, 3, 8, 8) ** 3, size=(side, side), mode="bicubic", align_corners=False)
        sky += clouds.clamp_min(0) * (0.05 + 0.5 * draw(1))
    count = int(200 + 3000 * draw(1))
    rows, cols = (torch.randint(0, side, (count,), generator=generator) for _ in range(2))
    flux = draw(count) ** 4 * 1.5 + 0.05  # many faint stars, a few bright ones
    colour = 0.7 + 0.3 * draw(count, 3)
    points = torch.zeros(1, 3, side, side)
    points[0, :, rows, cols] += (flux[:, None] * colour).T
    sigma = 0.6 + 0.8 * float(draw(1))
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    profile = torch.exp(-(offsets[None] ** 2 + offsets[:, None] ** 2) / (2 * sigma**2))
    points = F.conv2d(points, (profile / profile.max()).expand(3, 1, -1, -1), padding=4, groups=3)
    noise = torch.randn(1, 3, side, side, generator=generator) * 0.004
    return (sky + points + noise).clamp(0, 1)
