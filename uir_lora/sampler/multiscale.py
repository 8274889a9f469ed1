"""Coarse-to-fine execution: the composed backbone on a Laplacian pyramid of the image.

A backbone with a small receptive field cannot see what is global in an image: an exposure, an
airlight, a white point, a long blur. Run at 1/2, 1/4, ... scale, the same network sees 2x, 4x, ...
further. Each level of the pyramid contributes the frequency band it sees best: the coarsest run
gives the low frequencies (tone, colour, haze), each finer run only the detail its scale adds
(``out = y_k - up(down(y_k)) + up(out_{k+1})``). The extra cost is about a third of one pass.

LoRAs meant for this execution are trained through it (the function is differentiable), and the
bank records it, so inference runs them the way they were trained.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

DEFAULT_COARSEST = 64
"""The coarsest level's shorter side stays at or above this many pixels."""


def pyramid_levels(height: int, width: int, coarsest: int = DEFAULT_COARSEST) -> int:
    """How many halvings keep the shorter side at or above ``coarsest`` (0: run flat)."""
    levels, side = 0, min(height, width)
    while side // 2 >= coarsest:
        side //= 2
        levels += 1
    return levels


def _down(image: torch.Tensor) -> torch.Tensor:
    # Replicate-pad odd sides so every level halves exactly and nothing is cropped away.
    pad_h, pad_w = image.shape[-2] % 2, image.shape[-1] % 2
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(image, 2)


def _up(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def multiscale(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, levels: int) -> torch.Tensor:
    """``run`` (the composed backbone) on ``levels`` coarser copies of ``image`` and on ``image``.

    ``levels`` 0 is ``run(image)`` itself.
    """
    pyramid = [image]
    for _ in range(levels):
        pyramid.append(_down(pyramid[-1]))
    out = run(pyramid[-1])
    for level in reversed(pyramid[:-1]):
        restored = run(level)
        size = restored.shape[-2:]
        out = restored - _up(_down(restored), size) + _up(out, size)
    return out
