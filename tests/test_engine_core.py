"""Composer, sampler and pipeline on the real embedded backbone with random LoRAs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uir_lora.compose.composer import composed
from uir_lora.errors import InputError
from uir_lora.pipeline import compose, estimate, parse_weights, restore
from uir_lora.sampler.restore import SamplerOptions, restore_batch


def test_fused_equals_unfused(embedded_backbone, random_bank, photo):
    comp = compose(random_bank, None, {"noise": 0.6, "haze": 0.4}, "manual")
    fused = restore_batch(embedded_backbone, photo, [comp])
    unfused = restore_batch(embedded_backbone, photo, [dataclasses.replace(comp, fused=False)])
    assert (fused - unfused).abs().max() < 1e-4
    base = restore_batch(embedded_backbone, photo, [compose(random_bank, None, {}, "manual")])
    assert (fused - base).abs().max() > 1e-3  # the LoRAs really act


def test_a_b_a_is_bit_identical(embedded_backbone, random_bank, photo):
    a = compose(random_bank, None, {"noise": 1.0}, "manual")
    b = compose(random_bank, None, {"jpeg": 0.7, "haze": 0.3}, "manual")
    first = restore_batch(embedded_backbone, photo, [a])
    restore_batch(embedded_backbone, photo, [b])
    restore_batch(embedded_backbone, photo, [dataclasses.replace(b, fused=False)])
    assert torch.equal(first, restore_batch(embedded_backbone, photo, [a]))


def test_base_state_restored_after_error(embedded_backbone, random_bank, photo):
    before = {k: v.clone() for k, v in embedded_backbone.base_state_dict().items()}
    comp = compose(random_bank, None, {"noise": 1.0}, "manual")
    with pytest.raises(RuntimeError):
        with composed(embedded_backbone, comp):
            raise RuntimeError("boom")
    after = embedded_backbone.base_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not layer.lora_A or layer.disable_adapters for layer in embedded_backbone.lora_layers())


def test_tiles_match_whole_image(embedded_backbone, random_bank, photo):
    comp = compose(random_bank, None, {"noise": 1.0}, "manual")
    whole = restore_batch(embedded_backbone, photo, [comp], SamplerOptions(tile=512))
    tiled = restore_batch(embedded_backbone, photo, [comp], SamplerOptions(tile=64))
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 2e-3


def test_router_weights_topk_and_sum(random_bank, photo):
    (result,) = estimate(random_bank, photo, top_k=2, temperature=0.1)
    assert len(result.weights) == 2
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-5)
    kept = sorted(result.weights, key=result.similarities.get, reverse=True)
    assert kept == sorted(result.similarities, key=result.similarities.get, reverse=True)[:2]


def test_restore_auto_and_strength(embedded_backbone, random_bank, photo):
    out, comps = restore(photo, embedded_backbone, random_bank)
    assert out.shape == photo.shape and comps[0].source == "router"
    zero, _ = restore(photo, embedded_backbone, random_bank, strength=0.0)
    assert torch.allclose(zero, photo)


def test_parse_weights():
    assert parse_weights("noise=0.7, jpeg=0.3") == {"noise": 0.7, "jpeg": 0.3}
    with pytest.raises(InputError, match="noise=0.7"):
        parse_weights("noise")


def test_bank_default_top_k_larger_than_a_small_bank(tmp_path, embedded_backbone, encoder_dim, photo):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    one = open_bank(make_random_bank(tmp_path, embedded_backbone, ("noise",), dim=encoder_dim))
    assert one.manifest.router.top_k == 2
    (result,) = estimate(one, photo)
    assert result.weights == {"noise": pytest.approx(1.0)}
    with pytest.raises(InputError, match="top_k"):
        estimate(one, photo, top_k=2)
