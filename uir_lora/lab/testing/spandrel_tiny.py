"""Tiny randomly initialised models of architectures spandrel recognises, saved as a user's files would be.

- ``esrgan``: RRDBNet in the old-arch ESRGAN layout (convolutions only), ×1, ×2 or ×4;
- ``swinir``: a one-block SwinIR at ×1 (linear layers, attention, LayerNorm besides convolutions).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


def esrgan(scale: int = 4, seed: int = 0) -> nn.Module:
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(num_filters=8, num_blocks=1, scale=scale)


def swinir(seed: int = 0) -> nn.Module:
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    return SwinIR(img_size=16, embed_dim=6, depths=[1], num_heads=[1], window_size=4, mlp_ratio=2.0, upscale=1,
                  upsampler="")


def write_safetensors(model: nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_pth(model: nn.Module, path: Path, wrap_key: str | None = "params_ema") -> Path:
    """A tensors-only pickle, optionally wrapped as basicsr saves them ({"params_ema": state})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    torch.save({wrap_key: state} if wrap_key else state, path)
    return path
