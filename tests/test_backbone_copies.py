"""One backbone object per device and dtype: the float32 master stays, copies are cached and bounded, and a
copy keeps its parts together."""

from __future__ import annotations

import torch

from uir_lora.backbones.registry import load_backbone


def test_each_dtype_gets_its_own_backbone(tmp_path, encoder_dim):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    master = load_backbone("embedded-ffdnet")
    full = load_backbone("embedded-ffdnet", device="cpu", dtype=torch.float32)
    half = load_backbone("embedded-ffdnet", device="cpu", dtype=torch.bfloat16)
    assert full is master  # the request matches the loaded weights: no copy
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert load_backbone("embedded-ffdnet", device=torch.device("cpu"), dtype=torch.bfloat16) is half  # cached
    assert half.fingerprint == full.fingerprint  # the float32 identity, so banks still attach
    before = set(full.adapter_names())
    bank = open_bank(make_random_bank(tmp_path, full, dim=encoder_dim, bank_name="leak"))
    attached = set(bank.attach(half).values())
    assert attached <= set(half.adapter_names()) and not attached & set(full.adapter_names())
    assert set(full.adapter_names()) == before
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16


def test_backbone_copies_are_bounded_least_recently_used_first():
    from uir_lora.backbones import registry

    dtypes = (torch.bfloat16, torch.float16, torch.float64)
    copies = {dtype: load_backbone("embedded-ffdnet", device="cpu", dtype=dtype) for dtype in dtypes}
    cached = next(c for (family, _), c in registry._CACHE.items() if family == "embedded-ffdnet")
    assert len(cached.copies) == registry.MAX_COPIES
    assert [placement[1] for placement in cached.copies] == [torch.float16, torch.float64]  # bfloat16 evicted
    assert load_backbone("embedded-ffdnet", device="cpu", dtype=torch.float16) is copies[torch.float16]
    assert [placement[1] for placement in cached.copies] == [torch.float64, torch.float16]  # used: moved last
    assert copies[torch.bfloat16].dtype == torch.bfloat16  # an evicted copy still works for whoever holds it
    assert load_backbone("embedded-ffdnet").dtype == torch.float32  # the master is never evicted


def test_sd_turbo_copy_keeps_its_parts_together(tmp_path):
    from uir_lora.lab.testing import sd_turbo_tiny as tiny

    folder = tiny.write_diffusers_folder(tmp_path / "tiny-turbo", *tiny.tiny_models(seed=0))
    master = load_backbone("sd-turbo", folder)
    half = load_backbone("sd-turbo", folder, device="cpu", dtype=torch.bfloat16)
    assert half is not master and half.parts.unet is half.unet and half.parts._whole_vae[0] is half.vae
    assert {p.dtype for p in half.vae.parameters()} == {torch.bfloat16}  # the encoder moved with the root
    assert {p.dtype for p in master.parts.parameters()} == {torch.float32}
    with torch.no_grad():
        out = half.restore_step(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), {})
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
