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


def test_conditioning_blends_in_variance(embedded_backbone, random_bank):
    """A LoRA keeps its own noise level beside another kind, asks for part of its variance at partial weight,
    and the blend stays in the backbone's range (Composition.conditioning and the joint trainer share it)."""
    from uir_lora.compose.composer import Composition, blend_conditioning

    noisy, mild = {"sigma": 0.2}, {"sigma": 0.04}

    def sigma(*parts: tuple[float, dict]) -> float:
        return blend_conditioning(embedded_backbone, parts)["sigma"]

    assert sigma((1.0, noisy)) == pytest.approx(0.2)
    assert sigma((1.0, noisy), (1.0, mild)) == pytest.approx((0.2**2 + 0.04**2) ** 0.5)
    assert sigma((1.0, noisy), (1.0, mild)) > 0.2 > (0.2 + 0.04) / 2  # a weighted mean would halve it
    assert sigma((0.25, noisy)) == pytest.approx(0.1)
    assert sigma((3.0, noisy)) == pytest.approx(0.2)  # a manual weight above 1 asks for no more than the level
    assert sigma((0.0, noisy)) == embedded_backbone.default_conditioning["sigma"]
    assert sigma((1.0, {"sigma": 0.9}), (1.0, {"sigma": 0.9})) == embedded_backbone.conditioning_ranges["sigma"][1]
    assert sigma((1.0, {})) == embedded_backbone.default_conditioning["sigma"]  # a LoRA without one: the default
    names = random_bank.manifest.names[:2]
    composition = Composition(bank=random_bank, weights={names[0]: 0.5, names[1]: 1.0})
    expected = blend_conditioning(embedded_backbone, [(0.5, random_bank.manifest.lora(names[0]).conditioning),
                                                      (1.0, random_bank.manifest.lora(names[1]).conditioning)])
    assert composition.conditioning(embedded_backbone) == expected
