"""Render a routing result as a small bar chart (PIL only, so it works in any host)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .router import RoutingResult, plain

BAR = (70, 150, 230)
KEPT = (240, 160, 40)
WARN = (220, 60, 60)


def weight_chart(result: RoutingResult, width: int = 360, row: int = 18) -> np.ndarray:
    """HxWx3 uint8 picture: one row per LoRA, similarity as a thin bar, weight as a thick one."""
    names = sorted(result.similarities, key=lambda n: (-result.weights.get(n, 0.0), -result.similarities[n]))
    header = 20
    height = header + row * len(names) + (row if result.unknown else 0) + 4
    image = Image.new("RGB", (width, height), (30, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), "LoRA weight (orange) / similarity (blue)", fill=(220, 220, 220))
    label_w, bar_w = 110, width - 110 - 50
    for i, name in enumerate(names):
        y = header + i * row
        weight, sim = result.weights.get(name, 0.0), result.similarities[name]
        draw.text((4, y + 3), name[:16], fill=(230, 230, 230))
        draw.rectangle([label_w, y + 12, label_w + int(bar_w * max(sim, 0.0)), y + 14], fill=BAR)
        if weight > 0:
            draw.rectangle([label_w, y + 3, label_w + max(1, int(bar_w * weight)), y + 10], fill=KEPT)
        draw.text((label_w + bar_w + 4, y + 3), plain(weight, 2), fill=(230, 230, 230))
    if result.unknown:
        draw.text((4, header + row * len(names) + 2), "unknown degradation: no LoRA fits well", fill=WARN)
    return np.asarray(image)
