"""Shared helpers: generator-driven random draws and border-safe filtering.

Every random number comes from the caller's ``torch.Generator``. Kornia's augmentation classes
draw from the global RNG, so only kornia's deterministic kernels/filters are used and the
randomness is drawn here. Random tensors are created on the generator's device and then moved,
so the same seed gives the same parameters whatever device the image lives on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from kornia.filters import filter2d, gaussian_blur2d


def lerp(low: float, high: float, weight: float) -> float:
    return low + (high - low) * weight


def uniform(gen: torch.Generator, low: float, high: float) -> float:
    return lerp(low, high, float(torch.rand((1,), generator=gen, device=gen.device)))


def randint(gen: torch.Generator, low: int, high: int) -> int:
    """Integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=gen, device=gen.device))


def coin(gen: torch.Generator, probability: float) -> bool:
    return uniform(gen, 0.0, 1.0) < probability


def choice(gen: torch.Generator, options: Sequence[str], weights: Sequence[float] | None = None) -> str:
    if weights is None:
        return options[randint(gen, 0, len(options) - 1)]
    probs = torch.tensor(list(weights), dtype=torch.float64, device=gen.device)
    return options[int(torch.multinomial(probs, 1, generator=gen))]


def rand(shape: Sequence[int], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=gen, device=gen.device).to(like.device, like.dtype)


def randn(shape: Sequence[int], gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen, device=gen.device).to(like.device, like.dtype)


def border_mode(image: torch.Tensor, kernel_size: int) -> str:
    """Reflect padding avoids dark borders, but needs the pad to be smaller than the image."""
    height, width = image.shape[-2:]
    return "reflect" if kernel_size // 2 < min(height, width) else "replicate"


def convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel with one odd-sized [k, k] kernel (normalised by the caller)."""
    kernel = kernel.to(image.device, image.dtype)
    return filter2d(image, kernel[None], border_type=border_mode(image, kernel.shape[-1]))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with a kernel covering +-3 sigma."""
    size = 2 * math.ceil(3.0 * sigma) + 1
    sigma_yx = torch.tensor([[sigma, sigma]], device=image.device, dtype=image.dtype)
    return gaussian_blur2d(image, (size, size), sigma_yx, border_type=border_mode(image, size))


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Rec.601 luma, [B,1,H,W]."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype)
    return (image * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def smooth_random_field(gen: torch.Generator, like: torch.Tensor, cells: int) -> torch.Tensor:
    """Low-frequency random field in [0, 1], [1,1,H,W]: bicubic upsampling of a coarse grid."""
    height, width = like.shape[-2:]
    coarse = randn((1, 1, cells, cells), gen, like)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    low, high = field.amin(), field.amax()
    return (field - low) / (high - low).clamp_min(1e-6)


def screen(base: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Screen blend: brightens like adding light, never exceeds 1."""
    return 1.0 - (1.0 - base) * (1.0 - layer.clamp(0.0, 1.0))


def frame_scale(image: torch.Tensor, frame_side: int | None) -> float:
    """How many times larger the whole photo is than ``image`` (1 when ``image`` is the whole photo).

    ``frame_side`` is the shorter side of the photo that ``image`` is a window of (training crops of a
    256 px validation frame: 256), so size-relative parameters (drop radius, flake size, depth-field
    scale) match the photo's, not the crop's.
    """
    side = min(image.shape[-2:])
    if frame_side is None or frame_side == side:
        return 1.0
    if isinstance(frame_side, bool) or not isinstance(frame_side, int) or frame_side < side:
        raise ValueError(f"frame_side must be None or an int >= the image's shorter side ({side}), got "
                         f"{frame_side!r}; pass the side of the whole photo this image was cropped from")
    return frame_side / side


def frame_window(image: torch.Tensor, frame_side: int | None, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(frame height, frame width, top, left): where ``image`` sits in its whole photo.

    Draws the position from ``gen`` only when the image is a crop, so the default stream is unchanged.
    """
    height, width = image.shape[-2:]
    scale = frame_scale(image, frame_side)
    if scale == 1.0:
        return height, width, 0, 0
    frame_h, frame_w = round(height * scale), round(width * scale)
    return frame_h, frame_w, randint(gen, 0, frame_h - height), randint(gen, 0, frame_w - width)


def each_image(image: torch.Tensor, gen: torch.Generator, severities: Sequence[float] | None,
               damage: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]) -> torch.Tensor:
    """``damage(single, severity, gen)`` on every image of a [N,3,H,W] batch in [0, 1], each with its own severity
    (drawn from ``gen`` when ``severities`` is None); non-finite values zeroed, the result clipped to [0, 1]."""
    outputs = []
    for index, single in enumerate(image.float().split(1)):
        severity = float(rand((1,), gen, single)) if severities is None else float(severities[index])
        outputs.append(torch.nan_to_num(damage(single, severity, gen)).clamp(0.0, 1.0))
    return torch.cat(outputs).to(image.dtype)
