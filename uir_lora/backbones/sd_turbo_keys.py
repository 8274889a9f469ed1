"""LoRA file layout of the sd-turbo family: kohya names, so ComfyUI's core Load LoRA reads the UNet part.

In memory (peft, under the backbone's adapter root)      On disk (kohya / ComfyUI layout)
  unet.<path>.lora_A.weight                               lora_unet_<path, dots as _>.lora_down.weight
  unet.<path>.lora_B.weight                               lora_unet_<path, dots as _>.lora_up.weight
  (lora_alpha of the adapter)                             lora_unet_<path, dots as _>.alpha
  vae.decoder.<path>.lora_A/B.weight                      lora_vae_decoder_<path, dots as _>.lora_down/up.weight, .alpha

``<path>`` is the diffusers module name (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``),
so ``lora_unet_*`` keys are exactly what kohya's trainer writes for SD 2.x and what ComfyUI maps in
``comfy/lora.py:model_lora_keys_unet``. ComfyUI has no LoRA slot for the VAE: it skips ``lora_vae_*``.
Underscores make the kohya names ambiguous to invert, so reading builds the table from the injected
layers instead of parsing names.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..errors import BankError

PREFIXES = {"unet.": "lora_unet_", "vae.decoder.": "lora_vae_decoder_"}
DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"


def kohya_name(module_name: str) -> str:
    """``unet.down_blocks.0.resnets.0.conv1`` -> ``lora_unet_down_blocks_0_resnets_0_conv1``."""
    for prefix, kohya in PREFIXES.items():
        if module_name.startswith(prefix):
            return kohya + module_name[len(prefix):].replace(".", "_")
    raise ValueError(f"module {module_name!r} is neither under unet. nor vae.decoder.")


def adapted_modules(root: nn.Module, adapter: str) -> dict[str, BaseTunerLayer]:
    """{module name under root: peft layer} for every layer carrying ``adapter``."""
    return {name: module for name, module in root.named_modules()
            if isinstance(module, BaseTunerLayer) and adapter in module.lora_A}


def peft_to_kohya(root: nn.Module, adapter: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a peft adapter state (``get_peft_model_state_dict``) to kohya keys, adding each alpha."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in adapted_modules(root, adapter).items():
        kohya = kohya_name(name)
        out[kohya + DOWN] = state[f"{name}.lora_A.weight"]
        out[kohya + UP] = state[f"{name}.lora_B.weight"]
        out[kohya + ALPHA] = torch.tensor(float(layer.lora_alpha[adapter]))
    return out


def kohya_to_peft(root: nn.Module, adapter: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a kohya LoRA to the peft keys of ``adapter`` (already injected).

    A file's own alpha may differ from the adapter's: lora_up is rescaled so the applied delta
    (alpha / rank * up @ down) is the file's. Keys that match no adapted layer are passed through
    unchanged, so the strict check that follows names them as unexpected.
    """
    table = {kohya_name(name): (name, layer) for name, layer in adapted_modules(root, adapter).items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        base, suffix = _split(key)
        if base not in table or suffix == ALPHA:
            if base not in table:
                out[key] = tensor
            continue
        name, layer = table[base]
        if suffix == DOWN:
            out[f"{name}.lora_A.weight"] = tensor
            continue
        rank = state[base + DOWN].shape[0] if base + DOWN in state else layer.r[adapter]
        file_scale = float(state[base + ALPHA]) / rank if base + ALPHA in state else 1.0
        if not file_scale > 0:
            raise BankError(f"LoRA {adapter!r}: {base}.alpha is {float(state[base + ALPHA])}; alphas must be > 0")
        ratio = file_scale / layer.scaling[adapter]
        out[f"{name}.lora_B.weight"] = tensor if ratio == 1.0 else tensor * ratio
    return out


def _split(key: str) -> tuple[str, str]:
    for suffix in (DOWN, UP, ALPHA):
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return key, ""


def is_kohya_state(state: Mapping[str, torch.Tensor]) -> bool:
    """True if every key is in the kohya layout (files written by this family or kohya trainers)."""
    if not state:
        raise BankError("empty LoRA state")
    return all(key.startswith(tuple(PREFIXES.values())) for key in state)
