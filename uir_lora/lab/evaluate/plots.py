"""Benchmark pictures with PIL only (no plotting library is a dependency): gain bars and a gallery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ...images import tensor_to_uint8

COLOURS = {"router": (240, 150, 40), "oracle": (90, 170, 90), "multitask": (150, 110, 200),
           "ffdnet_sigma": (200, 80, 80), "classical": (70, 140, 220)}
FONT = ImageFont.load_default(size=13)
BACKGROUND, TEXT, GRID = (255, 255, 255), (20, 20, 20), (200, 200, 200)


def gain_chart(gains: Mapping[str, Mapping[str, float]], methods: Sequence[str], title: str, unit: str,
               width: int = 900, bar: int = 7) -> Image.Image:
    """Horizontal grouped bars: one group per case, one bar per method (missing methods are skipped)."""
    cases = list(gains)
    label_w, margin, header, gap = 170, 30, 46, 8
    group_h = bar * len(methods) + gap
    height = header + group_h * len(cases) + 40
    values = [v for case in cases for v in gains[case].values() if np.isfinite(v)] or [0.0]
    low, high = min(0.0, min(values)), max(0.0, max(values))
    span = (high - low) or 1.0
    plot_w = width - label_w - margin

    def x_of(value: float) -> int:
        return label_w + int((value - low) / span * plot_w)

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill=TEXT, font=FONT)
    for i, method in enumerate(methods):  # legend
        x = 8 + i * 150
        draw.rectangle([x, 26, x + 12, 36], fill=COLOURS.get(method, COLOURS["classical"]))
        draw.text((x + 16, 25), method, fill=TEXT, font=FONT)
    for tick in np.linspace(low, high, 6):
        draw.line([x_of(tick), header - 4, x_of(tick), height - 34], fill=GRID)
        draw.text((x_of(tick) - 12, height - 30), f"{tick:.1f}", fill=TEXT, font=FONT)
    draw.line([x_of(0), header - 4, x_of(0), height - 34], fill=TEXT)
    draw.text((label_w + plot_w // 2 - 40, height - 16), f"gain over the input ({unit})", fill=TEXT, font=FONT)
    for c, case in enumerate(cases):
        top = header + c * group_h
        draw.text((8, top + group_h // 2 - 8), case[:26], fill=TEXT, font=FONT)
        for m, method in enumerate(methods):
            value = gains[case].get(method)
            if value is None or not np.isfinite(value):
                continue
            y = top + m * bar
            x0, x1 = sorted((x_of(0), x_of(value)))
            draw.rectangle([x0, y, max(x1, x0 + 1), y + bar - 2], fill=COLOURS.get(method, COLOURS["classical"]))
    return image


def gallery(tiles: Mapping[tuple[str, str], torch.Tensor], rows: Sequence[str], columns: Sequence[str],
            tile: int = 128) -> Image.Image:
    """A grid of central ``tile``² crops: one row per case, one column per method (blank if missing)."""
    label_w, header = 120, 20
    image = Image.new("RGB", (label_w + tile * len(columns), header + tile * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for c, column in enumerate(columns):
        draw.text((label_w + c * tile + 4, 4), column[:20], fill=TEXT, font=FONT)
    for r, row in enumerate(rows):
        draw.text((4, header + r * tile + tile // 2 - 6), row[:18], fill=TEXT, font=FONT)
        for c, column in enumerate(columns):
            picture = tiles.get((row, column))
            if picture is None:
                continue
            height, width = picture.shape[-2:]
            top, left = max(0, (height - tile) // 2), max(0, (width - tile) // 2)
            crop = tensor_to_uint8(picture[..., top : top + tile, left : left + tile])
            image.paste(Image.fromarray(crop), (label_w + c * tile, header + r * tile))
    return image
