"""The sd-turbo family: SD-Turbo as a one-step image-to-image restorer, after img2img-turbo.

restore_step: VAE-encode the degraded image (the latent's mode; a seeded sample if ``sample_latent``)
times the VAE scaling -> UNet at the last timestep (999) with a fixed prompt's conditioning -> the
scheduler's predicted clean latent (DDPM step, as img2img-turbo) -> VAE decode. LoRAs go on the UNet
and the VAE decoder, both under one adapter root (``unet.*`` and ``vae.decoder.*``), so the composer,
the bank and the trainer see them as for any other family. Weights are the user's own: a diffusers
folder (models/diffusers/<name>/model_index.json) or a single-file SD 2.x checkpoint
(models/checkpoints/sd_turbo.safetensors) read with the configs shipped in configs/sd_turbo/.
Nothing is ever downloaded: every diffusers / transformers call passes local_files_only=True.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from ..errors import BackboneError
from .base import Backbone, weights_fingerprint
from .sd_turbo_keys import is_kohya_state, kohya_to_peft, peft_to_kohya
from .sd_turbo_load import CONFIG_DIR, MISSING_HINT, load_folder, load_single_file

TIMESTEP = 999
UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut", "proj_in", "proj_out",
                "ff.net.0.proj", "ff.net.2")
"""img2img-turbo's UNet targets; the same names also match the VAE decoder's resnets and mid attention."""
DECODER_TARGETS = ("vae.decoder.conv_in", "vae.decoder.conv_out")
FINGERPRINT_SAMPLES = 4096


class SDTurboParts(nn.Module):
    """The adapter root: the UNet and the VAE decoder (the encoder stays LoRA-free).

    The whole VAE is kept outside the module tree (peft would match its encoder's conv1/conv2 too),
    but moves with it: ``.to()`` / ``.half()`` on this root (accelerate, the trainer) also move the
    VAE encoder and quant convs, so restore_step never mixes devices.
    """

    def __init__(self, unet: nn.Module, vae: AutoencoderKL) -> None:
        super().__init__()
        self.unet = unet
        self.vae = nn.Module()
        self.vae.decoder = vae.decoder
        self._whole_vae = [vae]  # a list: not registered as a child

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch's signature
        super()._apply(fn, recurse)
        self._whole_vae[0]._apply(fn, recurse)  # idempotent on the decoder, already converted
        return self


class SDTurboBackbone(Backbone):
    """SD-Turbo, one step, as a frozen restorer; LoRAs on the UNet and the VAE decoder."""

    family = "sd-turbo"
    default_lora_targets = UNET_TARGETS + DECODER_TARGETS
    size_multiple = 8  # the VAE downsamples by 8
    tile_overlap = 64
    max_steps = 1
    default_conditioning: Mapping[str, float] = {}
    sample_latent = False
    """img2img-turbo samples the VAE posterior while training; the mode keeps tiles seamless at restore time."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, prompt_embeds: torch.Tensor,
                 scheduler_config: Mapping | None = None) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.prompt_embeds = prompt_embeds.detach()
        # img2img-turbo's one-step DDPM on the checkpoint's schedule; never clip latents to [-1, 1]
        self.scheduler = DDPMScheduler.from_config({**(scheduler_config or {}), "clip_sample": False,
                                                    "thresholding": False})
        self.scheduler.set_timesteps(1)  # step() needs it: predicts x0 from t=999 in one step
        self.parts = SDTurboParts(self.unet, self.vae)

    @property
    def adapter_root(self) -> nn.Module:
        return self.parts

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Backbone:
        self.parts.to(device=device, dtype=dtype)
        if dtype == torch.float16 and self.vae.config.get("force_upcast", True):
            self.vae.to(torch.float32)  # the SD VAE overflows in fp16 (diffusers' force_upcast); bf16 is fine
        return self

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def enable_gradient_checkpointing(self) -> None:
        """For training: recompute UNet and VAE activations in the backward pass."""
        self.unet.enable_gradient_checkpointing()
        self.vae.enable_gradient_checkpointing()

    def restore_step(
        self,
        image: torch.Tensor,
        conditioning: Mapping[str, float],
        *,
        steps: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x = image.to(self.device, self.vae_dtype) * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        latent = posterior.sample(generator) if self.sample_latent else posterior.mode()
        latent = (latent * self.vae.config.scaling_factor).to(self.dtype)
        embeds = self.prompt_embeds.to(self.device, self.dtype).expand(latent.shape[0], -1, -1)
        timestep = torch.full((latent.shape[0],), TIMESTEP, device=self.device, dtype=torch.long)
        noise_pred = self.unet(latent, timestep, encoder_hidden_states=embeds).sample
        clean = self.scheduler.step(noise_pred, TIMESTEP, latent).pred_original_sample
        decoded = self.vae.decode((clean / self.vae.config.scaling_factor).to(self.vae_dtype)).sample
        return ((decoded.clamp(-1, 1) + 1) / 2).to(image.dtype)

    # -- LoRA files in the kohya layout (see sd_turbo_keys.py) --------------------------------
    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        return peft_to_kohya(self.parts, name, super().adapter_state(name))

    def load_adapter_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        if is_kohya_state(state):
            state = kohya_to_peft(self.parts, name, state)
        super().load_adapter_state(name, state)


def sd_turbo_fingerprint(unet: nn.Module, vae: nn.Module, prompt_embeds: torch.Tensor) -> str:
    """Hash every tensor's name and shape, up to 4096 evenly spaced values of it, and the conditioning.

    Hashing every value of the UNet and VAE (over a billion) would need a float32 copy of all of them;
    any fine-tune or merged LoRA moves (nearly) every value of the layers it touches, so a strided
    sample of every tensor identifies the weights as well in practice, at a small fraction of the
    cost. Computed in float32 from the loaded weights, so both layouts of the same file give the same
    fingerprint.
    """
    sample: dict[str, torch.Tensor] = {"prompt_embeds": prompt_embeds.float()}
    for prefix, module in (("unet.", unet), ("vae.", vae)):
        for key, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
            sample[f"{prefix}{key}{tuple(tensor.shape)}"] = flat[::step][:FINGERPRINT_SAMPLES]
    return weights_fingerprint(sample)


def load_sd_turbo(path: str | Path, *, config_dir: str | Path | None = None, prompt: str = "") -> SDTurboBackbone:
    """Load SD-Turbo (or any SD 2.x-architecture model) from a diffusers folder or a single file."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise BackboneError(f"{path} is not a diffusers folder (no model_index.json); {MISSING_HINT}")
        unet, vae, embeds, scheduler = load_folder(path, prompt)
    elif path.is_file():
        unet, vae, embeds, scheduler = load_single_file(path, Path(config_dir or CONFIG_DIR), prompt)
    else:
        raise BackboneError(f"SD-Turbo weights not found at {path}; {MISSING_HINT}")
    backbone = SDTurboBackbone(unet, vae, embeds, scheduler)
    backbone._fingerprint = sd_turbo_fingerprint(unet, vae, embeds)  # before any dtype change
    return backbone
