"""The embedded backbone: FFDNet (colour), small enough for any CPU, shipped with the pack.

Written from the architecture's description (Zhang, Zuo, Zhang 2018; KAIR layout): pixel-unshuffle
by 2, concatenate a noise-level map, a plain stack of 3x3 convolutions with ReLU, pixel-shuffle back.
The pretrained colour weights (MIT, KAIR) are converted to safetensors by tools/convert_ffdnet.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import BackboneError
from .base import Backbone
from .noise_level import noise_level

FFDNET_FILE = "ffdnet_color.safetensors"


class FFDNet(nn.Module):
    """FFDNet(in_nc=3, out_nc=3, nc=96, nb=12); state-dict keys ``model.{0,2,...,22}.*``."""

    def __init__(self, channels: int = 3, width: int = 96, depth: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels * 4 + 1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels * 4, 3, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``image`` [B,C,H,W] in 0..1 (H, W even); ``sigma`` [B,1,1,1] noise level in 0..1 units."""
        packed = F.pixel_unshuffle(image, 2)
        sigma_map = sigma.to(packed.dtype).expand(-1, 1, packed.shape[2], packed.shape[3])
        return F.pixel_shuffle(self.model(torch.cat((packed, sigma_map), dim=1)), 2)


class EmbeddedFFDNetBackbone(Backbone):
    """FFDNet as a frozen restoration prior; LoRAs go on its twelve convolutions."""

    family = "embedded-ffdnet"
    default_lora_targets = tuple(f"model.{2 * i}" for i in range(12))  # the twelve convolutions
    size_multiple = 2
    tile_overlap = 32  # 12 convs at half resolution: a 50 px receptive field
    default_conditioning = {"sigma": 0.0}
    conditioning_ranges = {"sigma": (0.0, 1.0)}  # a noise level in 0..1 pixel units; beyond 1 the output saturates

    def __init__(self, net: FFDNet) -> None:
        self.net = net.eval().requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> EmbeddedFFDNetBackbone:
        path = Path(path)
        if path.suffix != ".safetensors":
            raise BackboneError(f"{path.name}: only .safetensors backbones are loaded (no pickles); "
                                f"convert it with tools/convert_ffdnet.py")
        if not path.is_file():
            raise BackboneError(f"FFDNet weights not found at {path}; expected {FFDNET_FILE} in lora_bank/backbones/")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BackboneError(f"{path}: not a readable safetensors file ({exc}); re-create it with "
                                f"tools/convert_ffdnet.py") from exc
        net = FFDNet()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BackboneError(f"{path}: not FFDNet colour weights (expected keys model.0..22, "
                                f"model.0.weight [96,13,3,3]): {str(exc)[:300]}") from exc
        backbone = cls(net)
        _ = backbone.fingerprint  # computed now, in float32, before any dtype change
        return backbone

    @property
    def adapter_root(self) -> nn.Module:
        return self.net

    def restore_step(
        self,
        image: torch.Tensor,
        conditioning: Mapping[str, float],
        *,
        steps: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # one noise level for the batch, or one per image (a measured sigma: ``measure_conditioning``)
        sigma = torch.as_tensor(conditioning.get("sigma", 0.0), dtype=self.dtype, device=image.device)
        sigma_map = sigma.reshape(-1, 1, 1, 1).expand(image.shape[0], 1, 1, 1)
        return self.net(image.to(self.dtype), sigma_map).to(image.dtype)

    def measure_conditioning(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """FFDNet's sigma: each photo's own noise level (backbones/noise_level.py)."""
        return {"sigma": noise_level(images)}
