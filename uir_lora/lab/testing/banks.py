"""Build small banks of random LoRAs for any backbone, for tests that need a bank but no training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ...backbones.base import Backbone
from ...bank.manifest import EncoderSpec, LoraEntry
from ...bank.store import lora_config
from ...bank.writer import add_lora, create_bank


def random_lora_state(backbone: Backbone, entry: LoraEntry, generator: torch.Generator, scale: float = 0.02) -> dict:
    """Inject a throwaway adapter, fill it with small random values, read it back, remove it."""
    name = "_random_init"
    backbone.inject_adapter(name, lora_config(entry))
    state = backbone.adapter_state(name)
    for layer in backbone.lora_layers():
        if name in layer.lora_A:
            layer.delete_adapter(name)
        layer.enable_adapters(False)
    getattr(backbone.adapter_root, "peft_config", {}).pop(name, None)
    # 0-d tensors are per-layer alphas (kohya layout, sd-turbo family): kept, they are not weights
    return {k: torch.randn(v.shape, generator=generator) * scale if v.ndim else v for k, v in state.items()}


def make_random_bank(
    root: Path,
    backbone: Backbone,
    names: Sequence[str] = ("noise", "haze", "jpeg"),
    *,
    dim: int = 8,
    rank: int = 2,
    seed: int = 0,
    conditioning: dict[str, float] | None = None,
    bank_name: str = "tiny",
) -> Path:
    """A valid bank of random LoRAs with orthogonal-ish random embeddings in a ``dim``-d space.

    ``dim`` is the encoder feature size the manifest claims; tests that route real images must pass
    the real encoder's dim (DegradationEncoder().dim).
    """
    generator = torch.Generator().manual_seed(seed)
    bank_dir = root / bank_name
    spec = EncoderSpec(dim=dim, feature_mean=[0.0] * dim, feature_std=[1.0] * dim)
    create_bank(bank_dir, bank_name, backbone.family, backbone.fingerprint, spec, description="random test bank")
    for name in names:
        entry = LoraEntry(name=name, file=f"{name}.safetensors", rank=rank, alpha=float(rank),
                          target_modules=list(backbone.default_lora_targets),
                          embedding=torch.randn(dim, generator=generator).tolist(),
                          conditioning=dict(conditioning or {}), description=f"random {name}",
                          provenance={"kind": "random, untrained (test fixture)"})
        add_lora(bank_dir, entry, random_lora_state(backbone, entry, generator))
    return bank_dir
