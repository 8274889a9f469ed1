"""Writing banks: one safetensors file per LoRA plus the manifest, each written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import BankError
from ..paths import give_default_mode
from .manifest import MANIFEST_NAME, EncoderSpec, LoraEntry, Manifest, read_manifest, write_manifest


def save_lora_file(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a LoRA's tensors (as float32) via a temporary file + rename (never a half-written file)."""
    return save_tensor_file({key: value.detach().to(torch.float32) for key, value in state.items()}, path, metadata)


def save_tensor_file(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as they are (dtypes kept) to a safetensors file via a temporary file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        pass
    try:
        save_file(tensors, tmp.name, metadata={k: str(v) for k, v in (metadata or {}).items()})
        give_default_mode(tmp.name)
    except BaseException:
        os.unlink(tmp.name)
        raise
    os.replace(tmp.name, path)
    return path


def create_bank(bank_dir: Path, name: str, backbone_family: str, backbone_fingerprint: str,
                encoder: EncoderSpec, description: str = "") -> Manifest:
    """Start an empty bank folder (refuses to overwrite an existing manifest)."""
    if (bank_dir / MANIFEST_NAME).exists():
        raise BankError(f"{bank_dir} already holds a bank; pick another folder or add LoRAs to it")
    manifest = Manifest(name=name, backbone_family=backbone_family, backbone_fingerprint=backbone_fingerprint,
                        encoder=encoder, loras=[], description=description)
    write_manifest(manifest, bank_dir)
    return manifest


def add_lora(bank_dir: Path, entry: LoraEntry, state: dict[str, torch.Tensor], *, replace: bool = False) -> Manifest:
    """Write ``entry.file`` and add (or, with ``replace``, update) its manifest entry; others untouched."""
    manifest = read_manifest(bank_dir)
    if entry.name in manifest.names and not replace:
        raise BankError(f"bank {manifest.name!r} already has a LoRA {entry.name!r}; pass replace=True to update it")
    metadata = {"name": entry.name, "rank": entry.rank, "alpha": entry.alpha, "bank": manifest.name,
                "backbone_fingerprint": manifest.backbone_fingerprint,
                "target_modules": json.dumps(entry.target_modules)}
    save_lora_file(state, bank_dir / entry.file, metadata)
    names = manifest.names
    if entry.name in names:  # in its place: the entries' order is the router's order of kinds
        manifest.loras[names.index(entry.name)] = entry
    else:
        manifest.loras.append(entry)
    write_manifest(manifest, bank_dir)
    return manifest
