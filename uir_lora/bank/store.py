"""Open a bank folder and attach its LoRAs to a backbone (validate everything, then hand to peft)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..backbones.base import Backbone
from ..errors import BankError, UIRError
from ..global_stage import GlobalAdapter
from .manifest import MANIFEST_NAME, LoraEntry, Manifest, read_manifest

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")
_STATE_LOCKS: weakref.WeakKeyDictionary[Backbone, threading.RLock] = weakref.WeakKeyDictionary()
_STATE_LOCKS_GUARD = threading.Lock()
_SOURCES_ATTRIBUTE = "_uir_lora_sources"
"""Backbone attribute: {adapter name: signature of the file it was loaded from} (deep copies keep it)."""


def backbone_lock(backbone: Backbone) -> threading.RLock:
    """The lock around everything that changes a backbone's shared state: adapters, merged weights, scales.

    Fused composition writes into the backbone's own weight tensors and unfused composition sets its
    layers' active adapters, so two threads composing on one cached backbone would corrupt each other;
    attach, compose and forward run under this lock (re-entrant: attach is called inside composition).
    """
    with _STATE_LOCKS_GUARD:
        lock = _STATE_LOCKS.get(backbone)
        if lock is None:
            lock = _STATE_LOCKS[backbone] = threading.RLock()
        return lock


def file_signature(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten: inode, size, modification time."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def read_lora_file(path: Path) -> dict[str, torch.Tensor]:
    """Read one LoRA's safetensors file; refuse pickles, empty, corrupt or non-finite files."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise BankError(f"{path.name}: pickle files are never loaded; convert it to .safetensors")
    if not path.is_file():
        raise BankError(f"LoRA file missing: expected {path}")
    if path.stat().st_size == 0:
        raise BankError(f"{path}: empty file; re-train or re-copy this LoRA")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BankError(f"{path}: corrupt or truncated safetensors ({exc}); re-copy or re-train it") from exc
    if not state:
        raise BankError(f"{path}: holds no tensors")
    for key, tensor in state.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise BankError(f"{path}: tensor {key!r} is not finite floating point; the file is damaged")
    return state


def read_global_adapter(path: Path) -> GlobalAdapter:
    """A global adapter file (checked like a LoRA file), frozen, in float32; one that dehazes has its head's keys,
    one with the exposure anchor its ``anchor_level``, one with its own cap on omega ``omega_cap``."""
    state = read_lora_file(path)
    adapter = GlobalAdapter(dehaze=any(key.startswith("dehaze_head.") for key in state), anchor="anchor_level" in state,
                            omega_cap=float(state["omega_cap"]) if "omega_cap" in state else None)
    try:
        adapter.load_state_dict({key: tensor.float() for key, tensor in state.items()}, strict=True)
    except RuntimeError as exc:
        raise BankError(f"{path}: not a global adapter of this version ({str(exc)[:200]}); re-train it "
                        f"with python -m uir_lora.lab.train.global_stage") from exc
    return adapter.eval().requires_grad_(False)


def bank_member(root: Path, name: str) -> Path:
    """File ``name`` of the bank folder ``root`` (resolved); a symlink pointing out of the bank is refused."""
    path = root / name
    if path.is_symlink() and root not in path.resolve().parents:
        raise BankError(f"{path}: a symlink to {path.resolve()}, outside the bank folder {root}; "
                        f"copy the file into the bank instead")
    return path


@dataclass
class LoraBank:
    """A validated bank on disk; LoRA tensors are read when attached."""

    root: Path
    manifest: Manifest
    _global_adapters: dict[str, tuple[tuple[int, int, int], GlobalAdapter]] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        """Short id used to namespace adapter names, so several banks can share one backbone.

        peft uses adapter names as module keys, which must not contain dots: the manifest's name is
        reduced to letters, digits and underscores here.
        """
        # the dataclasses' repr holds the whole manifest, embeddings included, without to_json's deep copy
        digest = hashlib.sha256((self.root.as_posix() + repr(self.manifest)).encode()).hexdigest()
        return f"{re.sub(r'[^0-9A-Za-z_]', '_', self.manifest.name)[:40]}_{digest[:8]}"

    def peft_names(self) -> dict[str, str]:
        """{LoRA name: its adapter's name in the backbone} for every LoRA, from one hash of the manifest: a presence
        router's manifest is large, and hashing it once per LoRA weighed on every restore."""
        key = self.key
        return {entry.name: f"{key}__{entry.name}" for entry in self.manifest.loras}

    def lora_path(self, entry: LoraEntry) -> Path:
        """The entry's file inside the bank folder; a symlink pointing out of the bank is refused."""
        return self.bank_file(entry.file)

    def bank_file(self, name: str) -> Path:
        """A file of the bank folder; a symlink pointing out of the bank is refused."""
        return bank_member(self.root, name)

    def global_adapter(self, lora: str) -> GlobalAdapter | None:
        """The kind's global adapter (float32, read once and again if its file changes), or None if it has none."""
        entry = self.manifest.lora(lora)
        if not entry.global_stage:
            return None
        path = self.bank_file(entry.global_stage)
        if not path.is_file():
            raise BankError(f"{path}: the global adapter of LoRA {lora!r} is missing; re-copy the bank folder")
        signature = file_signature(path)
        cached = self._global_adapters.get(lora)
        if cached is None or cached[0] != signature:
            cached = (signature, read_global_adapter(path))
            self._global_adapters[lora] = cached
        return cached[1]

    def check_backbone(self, backbone: Backbone) -> None:
        manifest = self.manifest
        if manifest.backbone_family != backbone.family:
            raise BankError(f"bank {manifest.name!r} was made for the {manifest.backbone_family!r} backbone, "
                            f"not {backbone.family!r}; load a bank made for this backbone")
        if manifest.backbone_fingerprint != backbone.fingerprint:
            raise BankError(f"bank {manifest.name!r} was trained on backbone weights "
                            f"{manifest.backbone_fingerprint}, but the loaded weights are {backbone.fingerprint}; "
                            f"its LoRAs would not fit: load the matching backbone or re-train the bank")
        for entry in manifest.loras:
            for key, value in entry.conditioning.items():
                low, high = backbone.conditioning_ranges.get(key, (-float("inf"), float("inf")))
                if not low <= value <= high:
                    raise BankError(f"bank {manifest.name!r}, LoRA {entry.name!r}: conditioning {key} = {value:g} "
                                    f"is outside [{low:g}, {high:g}], the range the {backbone.family!r} backbone "
                                    f"takes; fix the value in {MANIFEST_NAME}")

    def attach(self, backbone: Backbone) -> dict[str, str]:
        """Inject every LoRA of the bank into ``backbone`` (once); returns {lora name: adapter name}.

        A LoRA file replaced on disk since it was loaded is read again (and logged). All files are
        read and checked before the backbone is touched; if anything fails, adapters injected by this
        call are removed again.
        """
        with backbone_lock(backbone):
            self.check_backbone(backbone)
            sources = backbone.__dict__.setdefault(_SOURCES_ATTRIBUTE, {})
            names = self.peft_names()
            present = set(backbone.adapter_names())
            signatures = {entry.name: file_signature(self.lora_path(entry)) for entry in self.manifest.loras
                          if self.lora_path(entry).is_file()}
            todo = [entry for entry in self.manifest.loras
                    if names[entry.name] not in present or sources.get(names[entry.name]) != signatures.get(entry.name)]
            if not todo:
                return names
            states = {entry.name: read_lora_file(self.lora_path(entry)) for entry in todo}
            injected: list[str] = []
            try:
                for entry in todo:
                    adapter = names[entry.name]
                    if adapter in present:  # the same bank with a LoRA file changed on disk: reload its tensors
                        log.warning("LoRA file %s changed on disk since it was loaded; reloading it",
                                    self.lora_path(entry))
                        sources.pop(adapter, None)  # if the reload fails, the next attach tries again
                        backbone.load_adapter_state(adapter, states[entry.name])
                    else:
                        injected.append(adapter)
                        _inject_and_load(backbone, adapter, entry, states[entry.name], self.root / entry.file)
                    sources[adapter] = signatures[entry.name]
            except Exception:
                for adapter in injected:
                    _delete_adapter(backbone, adapter)
                    sources.pop(adapter, None)
                raise
            finally:
                _deactivate_all(backbone)
            return names


def lora_config(entry: LoraEntry) -> LoraConfig:
    return LoraConfig(r=entry.rank, lora_alpha=entry.alpha, target_modules=list(entry.target_modules),
                      init_lora_weights=False)


def _inject_and_load(backbone: Backbone, adapter: str, entry: LoraEntry, state: dict, path: Path) -> None:
    """Inject one adapter and load its tensors; on any failure nothing of it stays on the backbone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*peft_config.*")
        try:
            backbone.inject_adapter(adapter, lora_config(entry))
        except Exception as exc:  # peft raises ValueError, KeyError or TypeError for names it cannot place
            _delete_adapter(backbone, adapter)  # peft may have registered its config or some layers already
            raise BankError(f"{path.name}: target modules {entry.target_modules} do not fit the "
                            f"{backbone.family!r} backbone ({type(exc).__name__}: {exc})") from exc
    try:
        backbone.load_adapter_state(adapter, state)
    except Exception as exc:
        _delete_adapter(backbone, adapter)
        if isinstance(exc, UIRError):
            raise
        raise BankError(f"{path.name}: peft could not load it ({type(exc).__name__}: {exc}); "
                        f"re-train or re-export this LoRA") from exc


def _delete_adapter(backbone: Backbone, adapter: str) -> None:
    for layer in backbone.lora_layers():
        if adapter in layer.lora_A:
            layer.delete_adapter(adapter)
    config = getattr(backbone.adapter_root, "peft_config", None)
    if isinstance(config, dict):
        config.pop(adapter, None)


def _deactivate_all(backbone: Backbone) -> None:
    """Base state: every adapter loaded, none active (the frozen f0 only)."""
    for layer in backbone.lora_layers():
        layer.enable_adapters(False)


def open_bank(path: str | Path) -> LoraBank:
    root = Path(path)
    if not root.is_dir():
        raise BankError(f"bank folder not found: {root}; banks live in lora_bank/<name>/ or models/uir_lora/<name>/")
    return LoraBank(root=root.resolve(), manifest=read_manifest(root))
