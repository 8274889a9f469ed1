"""Outlier exposure for the unknown-degradation warning: image changes the bank has no LoRA for.

The router learns one extra embedding, "unknown", from these examples (Hendrycks et al., 2019,
"Deep anomaly detection with outlier exposure"); a best-cosine threshold alone cannot tell "unlike
every LoRA" from "somewhat like one". The pool is deliberately disjoint from the unknown kinds the
warning is *measured* on (``router.evaluate.UNKNOWN_KINDS``: mosaic, colour inversion, vignetting,
salt-and-pepper) and leaves out their close relatives (solarisation, illumination fields, impulse
noise, block averaging), so the measured hit rate is on kinds the router never saw. Every function
takes one [1,3,H,W] image in 0..1 and a generator, like ``uir_lora.degrade.degrade``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from kornia import enhance
from kornia.filters import filter2d
from kornia.geometry.transform import elastic_transform2d

OutlierFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
UNKNOWN_CLASS = "unknown"


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def posterize(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Few grey levels per channel (2-4 bits): banding, flat patches."""
    bits = int(torch.randint(2, 5, (), generator=gen))
    return enhance.posterize(image, bits)


def channel_shuffle(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colour channels swapped (a wrong channel order when a file is read)."""
    orders = ((1, 0, 2), (2, 1, 0), (0, 2, 1), (1, 2, 0), (2, 0, 1))
    return image[:, list(orders[int(torch.randint(0, len(orders), (), generator=gen))])]


def hue_rotation(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Hue turned by 60-180 degrees either way: false colours, not a white-balance cast."""
    angle = _uniform(gen, torch.pi / 3, torch.pi) * (1 if torch.rand((), generator=gen) < 0.5 else -1)
    return enhance.adjust_hue(image, angle)


def equalise(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-channel histogram equalisation blended in (harsh tone remapping)."""
    return torch.lerp(image, enhance.equalize(image), _uniform(gen, 0.7, 1.0))


def oversharpen(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Heavy sharpening halos (the opposite of blur)."""
    return enhance.sharpness(image, _uniform(gen, 8.0, 25.0)).clamp(0, 1)


def emboss(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Relief filter around grey, partly blended with the image."""
    kernel = torch.tensor([[[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]])
    relief = (filter2d(image, kernel, border_type="reflect") - image + 0.5).clamp(0, 1)
    return torch.lerp(image, relief, _uniform(gen, 0.6, 1.0))


def jigsaw(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The image cut into a 2x2 to 4x4 grid of tiles, shuffled (scrambled layout, hard seams)."""
    cells = int(torch.randint(2, 5, (), generator=gen))
    height, width = image.shape[-2] // cells * cells, image.shape[-1] // cells * cells
    tiles = image[..., :height, :width].unfold(2, height // cells, height // cells)
    tiles = tiles.unfold(3, width // cells, width // cells)  # [1,3,cells,cells,h,w]
    order = torch.randperm(cells * cells, generator=gen)
    shuffled = tiles.reshape(1, 3, cells * cells, *tiles.shape[-2:])[:, :, order]
    rows = shuffled.reshape(1, 3, cells, cells, *tiles.shape[-2:]).permute(0, 1, 2, 4, 3, 5)
    out = image.clone()
    out[..., :height, :width] = rows.reshape(1, 3, height, width)
    return out


def elastic_warp(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Strong smooth random displacement (a rippled, melted look)."""
    noise = torch.rand((1, 2, *image.shape[-2:]), generator=gen) * 2 - 1
    alpha = _uniform(gen, 2.0, 6.0)
    return elastic_transform2d(image, noise, kernel_size=(31, 31), sigma=(8.0, 8.0), alpha=(alpha, alpha),
                               padding_mode="reflection")


OUTLIERS: dict[str, OutlierFn] = {
    "posterize": posterize, "channel_shuffle": channel_shuffle, "hue_rotation": hue_rotation,
    "equalise": equalise, "oversharpen": oversharpen, "emboss": emboss, "jigsaw": jigsaw,
    "elastic_warp": elastic_warp,
}


def outlier_degrade(image: torch.Tensor, name: str = UNKNOWN_CLASS, *, generator: torch.Generator) -> torch.Tensor:
    """One random outlier of the pool per image (the call shape of ``uir_lora.degrade.degrade``)."""
    if name != UNKNOWN_CLASS:
        raise ValueError(f"outlier_degrade makes the {UNKNOWN_CLASS!r} class only, got {name!r}")
    names = sorted(OUTLIERS)
    pick = names[int(torch.randint(0, len(names), (), generator=generator))]
    return OUTLIERS[pick](image, generator).clamp(0, 1)
