"""Build small banks of random LoRAs for any backbone, for tests that need a bank but no training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from ...backbones.base import Backbone
from ...bank.manifest import EncoderSpec, LoraEntry
from ...bank.store import LoraBank, lora_config, open_bank
from ...bank.writer import add_lora, create_bank
from ...global_stage import GlobalAdapter


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


def random_adapter(seed: int) -> GlobalAdapter:
    """An adapter whose zero-initialised last layers are filled, so it is not the identity."""
    torch.manual_seed(seed)
    adapter = GlobalAdapter()
    for last in (adapter.global_head[-1], adapter.local_head):
        torch.nn.init.normal_(last.weight, std=0.05)
        torch.nn.init.normal_(last.bias, std=0.05)
    return adapter.eval()


def with_global_adapter(bank_dir: Path, kind: str, adapter: GlobalAdapter) -> None:
    """Write ``adapter`` into the bank folder as ``kind``'s global stage and name it in the manifest."""
    state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, str(bank_dir / f"{kind}.global.safetensors"))
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    for entry in manifest["loras"]:
        if entry["name"] == kind:
            entry["global_stage"] = f"{kind}.global.safetensors"
    (bank_dir / "manifest.json").write_text(json.dumps(manifest))


def restored_before(root: Path, name: str, staged: list[str]) -> None:
    """Mark the bank's LoRA ``name`` as restored before the global stages of ``staged`` (``restored_before``)."""
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["loras"]:
        if entry["name"] == name:
            entry["restored_before"] = staged
    (root / "manifest.json").write_text(json.dumps(manifest))


def reread_bank(root: Path, floor: float | None, full_from: float | None = None) -> LoraBank:
    """The random bank in ``root`` (noise, haze, jpeg) with noise restored before two global stages (haze, jpeg),
    ``router.reread_floor`` and ``router.full_stage_from``."""
    with_global_adapter(root, "haze", random_adapter(12))
    with_global_adapter(root, "jpeg", random_adapter(13))
    restored_before(root, "noise", ["haze", "jpeg"])
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["router"]["reread_floor"] = floor
    manifest["router"]["full_stage_from"] = full_from
    (root / "manifest.json").write_text(json.dumps(manifest))
    return open_bank(root)
