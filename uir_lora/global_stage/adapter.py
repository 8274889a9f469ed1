"""The global stage: what a backbone that sees 50 px cannot learn (exposure, airlight, white point).

Low light, haze and colour casts are properties of the whole image: an exposure curve, an airlight
that grows with depth, a white point. FFDNet's LoRAs only see a pixel's neighbourhood, so they learn
the colours of the scenes they trained on instead. Each kind may therefore carry, beside its LoRA, a
*global adapter*: a small network that looks at a thumbnail of the whole image and predicts

- a monotone tone curve per channel (``KNOTS`` values on an even grid of input levels) and a 3×3 colour
  matrix, then
- a coarse ``GRID`` × ``GRID`` field of per-channel gain and offset, bilinearly interpolated, for what
  varies across the image (haze thickens with depth, vignetting, uneven light).

The stage is the identity when no kind with a global adapter is active. It composes like the LoRAs:
parameters = identity + sum_i s_i (parameters_i - identity), the paper's x_out = f0(x) + sum_i s_i f_i(x)
with f0 the identity. It runs once per image, on the whole image, before tiling, so the result does not
depend on the tile size. Written by hand: it is a few convolutions and a lookup, smaller than any
library's tone-mapping model (HDRNet, CURL and Zero-DCE are its relatives).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

THUMBNAIL = 64
"""Side of the square thumbnail the adapter looks at: the whole image, squeezed."""
KNOTS = 16
GRID = 8
MAX_LOG_GAIN = 3.0
ROW_BAND = 256
"""Rows transformed at a time, so a 12-megapixel photo needs no full-size coefficient maps."""
QUANTILES = torch.linspace(0.02, 0.98, 13)
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1: a zero output is the identity curve


@dataclass(frozen=True)
class GlobalParams:
    """One image's global transform: ``curve`` [B,3,KNOTS], ``log_gain`` and ``offset`` [B,3,GRID,GRID], ``mix``."""

    curve: torch.Tensor
    log_gain: torch.Tensor
    offset: torch.Tensor
    mix: torch.Tensor
    """[B,3,3] colour matrix after the curves: saturation and cross-channel casts that per-channel curves miss."""

    @staticmethod
    def identity(batch: int = 1, device: torch.device | str = "cpu") -> GlobalParams:
        curve = torch.linspace(0.0, 1.0, KNOTS, device=device).expand(batch, 3, KNOTS).clone()
        zeros = torch.zeros(batch, 3, GRID, GRID, device=device)
        return GlobalParams(curve, zeros, zeros.clone(), torch.eye(3, device=device).expand(batch, 3, 3).clone())

    def is_identity(self) -> bool:
        ident = GlobalParams.identity(self.curve.shape[0], self.curve.device)
        return bool(torch.equal(self.curve, ident.curve) and torch.equal(self.mix, ident.mix)
                    and not self.log_gain.any() and not self.offset.any())

    @staticmethod
    def blend(parts: Iterable[tuple[float, GlobalParams]], batch: int = 1) -> GlobalParams:
        """identity + sum_i w_i (p_i - identity): the composition rule of the LoRAs, in parameter space."""
        out = GlobalParams.identity(batch)
        curve, log_gain, offset, mix = out.curve, out.log_gain, out.offset, out.mix
        for weight, params in parts:
            curve = curve + weight * (params.curve - out.curve)
            log_gain = log_gain + weight * params.log_gain
            offset = offset + weight * params.offset
            mix = mix + weight * (params.mix - out.mix)
        return GlobalParams(curve, log_gain, offset, mix)


def thumbnail(image: torch.Tensor) -> torch.Tensor:
    """The whole image [B,3,H,W] as [B,3,THUMBNAIL,THUMBNAIL], by area averaging (noise averages out)."""
    return F.adaptive_avg_pool2d(image.float(), THUMBNAIL)


class GlobalAdapter(nn.Module):
    """Thumbnail -> GlobalParams. About 70k parameters; its last layers start at zero (the identity)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(6, w // 2, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 32
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 16
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.global_head = nn.Sequential(nn.Linear(4 * w + 3 * QUANTILES.numel(), 2 * w), nn.ReLU(inplace=True),
                                         nn.Linear(2 * w, 3 * KNOTS + 9))
        self.local_head = nn.Conv2d(6 * w, 6, 1)
        for last in (self.global_head[-1], self.local_head):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, thumb: torch.Tensor) -> GlobalParams:
        # log-intensity beside the pixels: exposure is multiplicative, so the trunk sees it linearly
        features = self.trunk(torch.cat((thumb, torch.log(thumb.clamp_min(1e-3))), dim=1))
        pooled = torch.cat((features.mean(dim=(2, 3)), features.amax(dim=(2, 3))), dim=1)
        # each channel's histogram (as quantiles) beside the features: histogram equalisation's input, whatever
        # tone curve darkened the photo
        levels = torch.quantile(thumb.flatten(2), QUANTILES.to(thumb.device), dim=-1).permute(1, 0, 2).flatten(1)
        head = self.global_head(torch.cat((pooled, levels), dim=1))
        raw, mix = head[:, : 3 * KNOTS].view(-1, 3, KNOTS), head[:, 3 * KNOTS:].view(-1, 3, 3)
        start = 0.25 * torch.tanh(raw[..., :1])
        steps = F.softplus(raw[..., 1:] + _SOFTPLUS_ONE) / (KNOTS - 1)
        curve = torch.cat((start, start + torch.cumsum(steps, dim=-1)), dim=-1)
        local = self.local_head(torch.cat((features, pooled[..., None, None].expand(-1, -1, GRID, GRID)), dim=1))
        mix = torch.eye(3, device=mix.device) + 0.5 * torch.tanh(mix)
        return GlobalParams(curve, local[:, :3].clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN), local[:, 3:], mix)


def apply_curve(image: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear per-channel curve: ``image`` [B,3,H,W] in 0..1, ``curve`` [B,3,KNOTS]."""
    b, c, h, w = image.shape
    position = image.clamp(0, 1).reshape(b, c, h * w) * (KNOTS - 1)
    lower = position.floor().clamp(max=KNOTS - 2)
    frac = position - lower
    index = lower.long()
    low = torch.gather(curve, 2, index)
    high = torch.gather(curve, 2, index + 1)
    return (low + frac * (high - low)).view(b, c, h, w)


def _field(params: GlobalParams, rows: slice, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain and offset at the pixels of ``rows``, bilinear between the grid cells' centres."""
    start, stop = rows.start, rows.stop
    ys = (torch.arange(start, stop, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)
    grid = grid.to(params.offset.device)[None].expand(params.offset.shape[0], -1, -1, -1)
    both = torch.cat((params.log_gain, params.offset), dim=1)
    sampled = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :3].exp(), sampled[:, 3:]


def apply_global(image: torch.Tensor, params: GlobalParams, clamp: bool = True) -> torch.Tensor:
    """The global transform on the whole image [B,3,H,W], a band of rows at a time."""
    height, width = image.shape[-2:]
    if torch.is_grad_enabled() and params.curve.requires_grad:  # training: small images, one band keeps the graph
        return _transform(image, params, slice(0, height), clamp)
    out = torch.empty_like(image, dtype=torch.float32)
    for top in range(0, height, ROW_BAND):
        rows = slice(top, min(top + ROW_BAND, height))
        out[..., rows, :] = _transform(image, params, rows, clamp)
    return out


def _transform(image: torch.Tensor, params: GlobalParams, rows: slice, clamp: bool) -> torch.Tensor:
    gain, offset = _field(params, rows, *image.shape[-2:])
    toned = torch.einsum("bij,bjhw->bihw", params.mix, apply_curve(image[..., rows, :].float(), params.curve))
    band = gain * toned + offset
    return band.clamp(0, 1) if clamp else band


def run_adapters(images: torch.Tensor, weighted: Sequence[tuple[float, GlobalAdapter]]) -> torch.Tensor:
    """``images`` [B,3,H,W] through the weighted adapters' blended transform, each image with its own thumbnail;
    the images themselves when there is none. The one path of the sampler, the trainers and validation."""
    if not weighted:
        return images
    thumb = thumbnail(images)
    return apply_global(images, GlobalParams.blend([(weight, adapter(thumb)) for weight, adapter in weighted],
                                                   images.shape[0]))
