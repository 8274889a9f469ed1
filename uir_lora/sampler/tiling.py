"""Overlapping tiles with seamless blending, so any image size runs in bounded memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..images import tile_starts


def blend_window(
    height: int, width: int, overlap: int, *, top: bool, bottom: bool, left: bool, right: bool
) -> torch.Tensor:
    """[1,1,h,w] weights: 1 inside, a raised-cosine ramp over ``overlap`` on sides that meet a neighbour."""

    def ramp(size: int, start: bool, end: bool) -> torch.Tensor:
        w = torch.ones(size)
        n = min(overlap, size // 2)
        if n > 0:
            edge = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, n + 2)[1:-1])
            if start:
                w[:n] = edge
            if end:
                w[-n:] = edge.flip(0)
        return w

    return (ramp(height, top, bottom)[:, None] * ramp(width, left, right)[None, :])[None, None]


def pad_to_multiple(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Replicate-pad bottom/right so H and W are multiples of ``multiple``; returns the pads."""
    pad_h = (-image.shape[-2]) % multiple
    pad_w = (-image.shape[-1]) % multiple
    if pad_h or pad_w:
        mode = "replicate" if image.shape[-2] > 1 or image.shape[-1] > 1 else "constant"
        image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    return image, pad_h, pad_w


def run_tiled(
    image: torch.Tensor,
    step: Callable[[torch.Tensor, tuple[int, int, int, int]], torch.Tensor],
    *,
    tile: int,
    overlap: int,
    multiple: int = 1,
    on_tile: Callable[[], None] | None = None,
    batch: int = 1,
) -> torch.Tensor:
    """Apply ``step`` tile by tile over ``image`` [B,C,H,W]; blend overlaps without seams.

    ``step(tile_image, (y0, y1, x0, x1))`` gets tiles whose sides are multiples of ``multiple``;
    ``on_tile`` runs after each tile (progress, cancellation). ``batch`` > 1 stacks up to that many
    tiles (all of one size) along dim 0 into one call, whose box then spans all of them.
    """
    height, width = image.shape[-2:]
    padded, _, _ = pad_to_multiple(image, multiple)
    full_h, full_w = padded.shape[-2:]
    boxes = tile_boxes(height, width, tile, overlap, multiple)
    if len(boxes) == 1:
        out = step(padded, (0, full_h, 0, full_w))
        if on_tile:
            on_tile()
        return out[..., :height, :width]
    out = torch.zeros_like(padded, dtype=torch.float32)
    norm = torch.zeros((1, 1, full_h, full_w), dtype=torch.float32, device=padded.device)
    images_per_tile = padded.shape[0]
    for first in range(0, len(boxes), batch):
        group = boxes[first : first + batch]
        tiles = torch.cat([padded[..., y0:y1, x0:x1] for y0, y1, x0, x1 in group])
        span = (group[0][0], max(b[1] for b in group), min(b[2] for b in group), max(b[3] for b in group))
        results = step(tiles, span).float().split(images_per_tile)
        for (y, y1, x, x1), result in zip(group, results):
            window = blend_window(y1 - y, x1 - x, overlap, top=y > 0, bottom=y1 < full_h, left=x > 0,
                                  right=x1 < full_w).to(result.device)
            out[..., y:y1, x:x1] += result * window
            norm[..., y:y1, x:x1] += window
            if on_tile:
                on_tile()
    return (out / norm.clamp_min(1e-8)).to(image.dtype)[..., :height, :width]


def tile_boxes(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """The (y0, y1, x0, x1) tiles ``run_tiled`` cuts an image of ``height`` x ``width`` into, in the coordinates of
    the image padded to ``multiple``."""
    full_h, full_w = height + (-height) % multiple, width + (-width) % multiple
    tile = max(multiple, tile - tile % multiple)
    return [(y, min(y + tile, full_h), x, min(x + tile, full_w))
            for y in tile_starts(full_h, tile, overlap) for x in tile_starts(full_w, tile, overlap)]


def count_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> int:
    return len(tile_boxes(height, width, tile, overlap, multiple))
