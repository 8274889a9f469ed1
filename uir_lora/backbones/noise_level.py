"""A photo's own noise level, for a LoRA whose FFDNet sigma follows the photo (``LoraEntry.measured``).

FFDNet is a non-blind denoiser: told a noise level, it removes that much. A LoRA trained at one fixed level
denoises a faintly noisy photo, or a clean one read as noisy, as hard as strong noise. Measured instead: the
high-pass residual of each channel (the photo minus its Gaussian blur) in 8 x 8 px blocks, the flattest quarter
of the blocks of mid brightness (texture and edges raise the others; clipping at black and white lowers them),
scaled so that white noise of deviation s reads s. A blur of 1.5 px, not a second difference, keeps the noise
that a camera's demosaicing and denoising correlate over neighbouring pixels. Textured photos read a little
noise where there is none; the LoRA is trained on the same reading, so it learns what the reading means.

Written by hand: scikit-image's ``estimate_sigma`` (wavelet MAD) reads texture as noise on every block, and no
maintained torch library estimates a blind noise level.
"""

from __future__ import annotations

import functools

import kornia
import torch
import torch.nn.functional as F

BLUR = 1.5
"""Deviation of the Gaussian blur (px) that the residual is taken against."""
BLOCK = 8
QUANTILE = 0.25
"""Of the blocks' residual variances, this quantile: the flattest blocks measure the noise, not the texture."""
MID_BRIGHTNESS = (0.08, 0.92)
"""Blocks whose mean is outside this range are left out (clipped noise reads low there), unless fewer than
MIN_BLOCKS are inside it (a night sky), when every block counts."""
MIN_BLOCKS = 8
MAX_SIDE = 1024
"""Larger photos are measured on a centred crop of this side: enough blocks, bounded memory and time."""


def _kernel_size() -> tuple[int, int]:
    side = 2 * int(3 * BLUR) + 1  # the blur truncated at about 3 deviations
    return side, side


def _residual(planes: torch.Tensor) -> torch.Tensor:
    return planes - kornia.filters.gaussian_blur2d(planes, _kernel_size(), (BLUR, BLUR), border_type="reflect")


@functools.cache  # computed on first use, not at import
def _white_noise_gain() -> float:
    """The residual's variance per unit of white-noise variance: the sum of the squared high-pass kernel."""
    impulse = torch.zeros(1, 1, 4 * _kernel_size()[0], 4 * _kernel_size()[0])
    impulse[..., impulse.shape[-2] // 2, impulse.shape[-1] // 2] = 1.0
    return float(_residual(impulse).square().sum())


def noise_level(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in 0..1 -> [B] on the images' device: each image's noise deviation in 0..1 pixel units (0 on an
    image too small to hold a block)."""
    height, width = images.shape[-2:]
    top, left = max(0, (height - MAX_SIDE) // 2), max(0, (width - MAX_SIDE) // 2)
    x = images[..., top : top + MAX_SIDE, left : left + MAX_SIDE].detach().float().clamp(0, 1)
    batch = x.shape[0]
    if min(x.shape[-2:]) < BLOCK:
        return torch.zeros(batch, device=images.device)
    planes = x.reshape(-1, 1, *x.shape[-2:])  # every channel is a sample of the same noise
    variance = F.avg_pool2d(_residual(planes).square(), BLOCK).reshape(batch, -1)
    brightness = F.avg_pool2d(planes, BLOCK).reshape(batch, -1)
    low, high = MID_BRIGHTNESS
    levels = []
    for block_variance, block_brightness in zip(variance, brightness):
        mid = (block_brightness > low) & (block_brightness < high)
        chosen = block_variance[mid] if int(mid.sum()) >= MIN_BLOCKS else block_variance
        levels.append((torch.quantile(chosen, QUANTILE).clamp_min(0) / _white_noise_gain()).sqrt())
    return torch.stack(levels)
