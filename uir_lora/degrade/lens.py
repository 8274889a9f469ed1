"""Adherent raindrops on the lens or windscreen.

Each drop is a soft-edged ellipse acting as a small fish-eye lens: it shows an out-of-focus,
inverted and wider view of the scene around (mostly above) it, with a slightly dark rim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import frame_scale, frame_window, gaussian_blur, lerp, rand, uniform

_MAX_DROPS = 22


def _pixel_grid(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = image.shape[-2:]
    rows = torch.arange(height, device=image.device, dtype=image.dtype).view(height, 1).expand(height, width)
    cols = torch.arange(width, device=image.device, dtype=image.dtype).view(1, width).expand(height, width)
    return rows, cols


def _drop_field(image: torch.Tensor, severity: float, gen: torch.Generator,
                frame_side: int | None = None) -> tuple[torch.Tensor, ...]:
    """Blend weight, source rows/cols (where each pixel looks through the drops) and rim darkening.

    Drops are placed on the whole photo (``frame_side``); a crop sees only those in its window.
    """
    # Draw parameters for the maximum drop count so severity changes only how many are used.
    params = rand((_MAX_DROPS, 7), gen, torch.zeros(1)).tolist()
    frame_h, frame_w, top, left = frame_window(image, frame_side, gen)
    side = float(min(frame_h, frame_w))
    count = max(1, round(lerp(3, _MAX_DROPS, severity)))
    rows, cols = _pixel_grid(image)
    src_rows, src_cols = rows.clone(), cols.clone()
    weight = torch.zeros_like(rows)
    rim = torch.zeros_like(rows)
    for cy, cx, size, aspect, magnify, lift, sharp in params[:count]:
        cy, cx = cy * frame_h - top, cx * frame_w - left
        radius_x = side * lerp(0.02, 0.08, size) * lerp(0.8, 1.25, severity)
        radius_y = radius_x * lerp(0.75, 1.4, aspect)
        norm_y, norm_x = (rows - cy) / radius_y, (cols - cx) / radius_x
        radial = torch.sqrt(norm_y**2 + norm_x**2)
        mask = torch.sigmoid((1.0 - radial) * lerp(6.0, 16.0, sharp))
        # Inverted, wider view: a convex drop flips the scene and gathers light from a larger area.
        gain = lerp(1.2, 2.5, magnify)
        drop_rows = cy - (rows - cy) * gain - lift * 2.0 * radius_y
        drop_cols = cx - (cols - cx) * gain
        src_rows = src_rows + mask * (drop_rows - src_rows)
        src_cols = src_cols + mask * (drop_cols - src_cols)
        weight = torch.maximum(weight, mask)
        rim = torch.maximum(rim, 4.0 * mask * (1.0 - mask))
    return weight, src_rows, src_cols, rim


def raindrop(image: torch.Tensor, severity: float, gen: torch.Generator,
             frame_side: int | None = None) -> torch.Tensor:
    height, width = image.shape[-2:]
    weight, src_rows, src_cols, rim = _drop_field(image, severity, gen, frame_side)
    # Drops sit far outside the focal plane, so what they show is defocused.
    side = min(height, width) * frame_scale(image, frame_side)
    blurred = gaussian_blur(image, max(0.8, side * uniform(gen, 0.01, 0.03)))
    # grid_sample wants (x, y) in [-1, 1].
    grid_x = src_cols / max(width - 1, 1) * 2.0 - 1.0
    grid_y = src_rows / max(height - 1, 1) * 2.0 - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)
    seen = F.grid_sample(blurred, grid[None], mode="bilinear", padding_mode="reflection", align_corners=True)
    seen = seen * uniform(gen, 0.9, 1.15)
    out = image + weight[None, None] * (seen - image)
    return out * (1.0 - uniform(gen, 0.05, 0.2) * rim[None, None])
