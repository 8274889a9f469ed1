"""JPEG compression via kornia's differentiable JPEG codec (8x8 DCT, 4:2:0 chroma, real tables)."""

from __future__ import annotations

import torch
from kornia.enhance import jpeg_codec_differentiable

from ._common import coin, lerp, uniform


def _jpeg_roundtrip(image: torch.Tensor, quality: float) -> torch.Tensor:
    """Encode/decode once. Sizes that are not multiples of 16 (8x8 DCT on 2x-subsampled chroma)
    are handled by kornia itself: it replicate-pads bottom/right to whole macroblocks and crops back
    (checked in kornia 0.9 ``_perform_padding``), so edge blocks are not darkened."""
    quality_tensor = torch.tensor([quality], device=image.device, dtype=image.dtype)
    return jpeg_codec_differentiable(image.clamp(0.0, 1.0), quality_tensor).clamp(0.0, 1.0)


def jpeg(image: torch.Tensor, severity: float, gen: torch.Generator) -> torch.Tensor:
    quality = min(60.0, max(10.0, lerp(60.0, 10.0, severity) * uniform(gen, 0.9, 1.1)))
    coded = _jpeg_roundtrip(image, quality)
    if coin(gen, 0.25):
        # Re-saved images: a second, milder compression on top of the first.
        coded = _jpeg_roundtrip(coded, uniform(gen, quality + 10.0, 90.0))
    return coded
