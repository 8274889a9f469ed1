"""The interface every backbone family implements.

The router, the composer, the sampler and the nodes only talk to this interface, so a new
family (the embedded FFDNet, the SD-Turbo family, ...) slots in without touching them.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..errors import BankError


class Backbone(ABC):
    """A frozen pretrained restorer that LoRAs are attached to by name."""

    family: str = ""
    """Stable family id recorded in bank manifests, e.g. ``"embedded-ffdnet"``."""
    default_lora_targets: tuple[str, ...] = ()
    """Module-name patterns (peft ``target_modules``) a new LoRA adapts unless told otherwise."""
    size_multiple: int = 1
    """Input height and width are padded to a multiple of this."""
    tile_overlap: int = 32
    """Overlap between tiles, about the receptive field's half-width."""
    max_steps: int = 1
    """How many restoration steps the family supports (1 = one-step)."""
    default_conditioning: Mapping[str, float] = {}
    """Conditioning used when no LoRA is active (e.g. FFDNet's noise level)."""
    conditioning_ranges: Mapping[str, tuple[float, float]] = {}
    """Inclusive range of each conditioning value the family takes; a bank's values outside it are refused."""

    # -- the pieces the engine needs -------------------------------------------------------
    @property
    @abstractmethod
    def adapter_root(self) -> nn.Module:
        """The module(s) LoRA adapters are injected into (its named modules are the targets)."""

    @abstractmethod
    def restore_step(
        self,
        image: torch.Tensor,
        conditioning: Mapping[str, float],
        *,
        steps: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Restore ``image`` ([B,3,H,W] in 0..1, H and W multiples of ``size_multiple``); a conditioning value is
        a float, or a [B] tensor of one value per image where it was measured (``measure_conditioning``)."""

    def measure_conditioning(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Conditioning values read from the photos themselves ([B,3,H,W] -> {name: [B]}), for LoRAs whose
        ``measured`` names them; none by default."""
        return {}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Backbone:
        """Move weights (and adapters) to ``device`` / ``dtype``; returns self."""
        self.adapter_root.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.adapter_root.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first adapted module (families that keep parts in float32 say so)."""
        return next(self.adapter_root.parameters()).dtype

    # -- shared behaviour -------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """sha256 over the frozen base weights (names, shapes, bytes); banks record it."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = weights_fingerprint(self.base_state_dict())
        return self._fingerprint

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen weights only, without any adapter tensors, keyed as in the base model."""
        state = {}
        for key, value in self.adapter_root.state_dict().items():
            if "lora_" in key:
                continue
            state[key.replace(".base_layer", "")] = value
        return state

    def inject_adapter(self, name: str, config: LoraConfig) -> None:
        """Add an empty (untrained) LoRA adapter called ``name``; weights are loaded afterwards."""
        inject_adapter_in_model(config, self.adapter_root, adapter_name=name)
        self.adapter_root.requires_grad_(False)

    def load_adapter_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Load a LoRA file's tensors into adapter ``name`` after a strict key and shape check.

        Families whose files use another key layout (e.g. diffusers/kohya) convert here first.
        """
        check_and_load_peft_state(self, name, state)

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s tensors in this family's file layout (inverse of load_adapter_state)."""
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.adapter_root, adapter_name=name)

    def lora_layers(self) -> list[BaseTunerLayer]:
        return [m for m in self.adapter_root.modules() if isinstance(m, BaseTunerLayer)]

    def adapter_names(self) -> list[str]:
        names: set[str] = set()
        for layer in self.lora_layers():
            names.update(layer.lora_A.keys())
        return sorted(names)


def with_measured(conditioning: Mapping[str, float], measured: Collection[str],
                  measurement: Mapping[str, float | torch.Tensor]) -> dict[str, float | torch.Tensor]:
    """A LoRA's conditioning with each of its ``measured`` values taken from ``measurement`` (a float, or a
    tensor of one value per image), the recorded value its ceiling. Values not measured stay as recorded."""
    values: dict[str, float | torch.Tensor] = dict(conditioning)
    for key in measured:
        if key in measurement:
            value = measurement[key]
            values[key] = (value.clamp(max=conditioning[key]) if isinstance(value, torch.Tensor)
                           else min(float(value), conditioning[key]))
    return values


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A stable hash of a state dict's values as float32, independent of device.

    Loaders compute it once right after loading (before any dtype change) and cache it, so a
    backbone moved to bf16 keeps the identity of the file it came from.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()[:32]


def expected_adapter_state(backbone: Backbone, adapter: str) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(backbone.adapter_root, adapter_name=adapter)


def check_and_load_peft_state(backbone: Backbone, adapter: str, state: dict[str, torch.Tensor]) -> None:
    """Strict key and shape check against the injected adapter, then peft loads the tensors."""
    expected = expected_adapter_state(backbone, adapter)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BankError(f"LoRA {adapter!r} does not match the backbone's layers: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]} ({len(missing)} / {len(unexpected)} in all); "
                        f"it was made for another backbone or another target list")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BankError(f"LoRA {adapter!r}: {key} has shape {tuple(tensor.shape)}, the backbone needs "
                            f"{tuple(expected[key].shape)}; it was made for another backbone or rank")
    set_peft_model_state_dict(backbone.adapter_root, state, adapter_name=adapter)
