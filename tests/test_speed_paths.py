"""The speed paths (folded encoder trunk, fast merge, input checks) give what the plain paths give."""

from __future__ import annotations

import pytest
import torch

from uir_lora.bank.manifest import EncoderSpec
from uir_lora.router import encoder as router_encoder
from uir_lora.router.encoder import DegradationEncoder


def reference_block_features(spec: EncoderSpec, images: torch.Tensor) -> torch.Tensor:
    """block_features the plain way: the published net, batch norms and 'same' pads unfused, NCHW."""
    net, wanted = router_encoder.efficientnet_lite0(), set(spec.blocks)
    x = (images.float().clamp(0, 1) - 0.5) / 0.5
    with torch.inference_mode():
        x = net._swish(net._bn0(net._conv_stem(x)))
        stats = []
        for index, block in enumerate(net._blocks[: max(spec.blocks) + 1]):
            x = block(x)
            if index in wanted:
                std = x.std(dim=(2, 3), unbiased=False)
                stats += [x.mean(dim=(2, 3)), std.clamp_min(1e-6).log() if spec.log_std else std]
                if spec.peak:
                    stats.append((x.amax(dim=(2, 3)) - x.mean(dim=(2, 3))) / std.clamp_min(1e-6))
    return torch.cat(stats, dim=1)


@pytest.mark.parametrize("spec", [EncoderSpec(), EncoderSpec(blocks=[0, 2, 4, 7, 10], log_std=False, peak=True)],
                         ids=["shipped", "other-blocks"])
@pytest.mark.parametrize("size", [(224, 224), (100, 150), (230, 257)])
def test_folded_trunk_gives_the_published_nets_features(photo, spec, size):
    image = torch.nn.functional.interpolate(photo, size=size, mode="bilinear", align_corners=False)
    batch = torch.cat([image, image.flip(-1) * 0.7])
    fast = DegradationEncoder(spec).block_features(batch)
    torch.testing.assert_close(fast, reference_block_features(spec, batch), atol=1e-5, rtol=1e-5)


def test_features_of_a_photo_match_the_reference_within_1e_5(photo):
    """The whole feature (crops, high-pass, averaging) against the reference trunk, on a 512-px image."""
    image = torch.nn.functional.interpolate(photo, size=(384, 512), mode="bicubic", align_corners=False).clamp(0, 1)
    encoder = DegradationEncoder()
    fast = encoder.features(image)
    original = DegradationEncoder.block_features
    try:
        DegradationEncoder.block_features = lambda self, crops: reference_block_features(self.spec, crops)
        reference = encoder.features(image)
    finally:
        DegradationEncoder.block_features = original
    assert fast.shape == (1, encoder.dim)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_the_published_net_is_left_untouched():
    """evaluate/metrics.py reads the cached net: folding must work on a copy."""
    DegradationEncoder().block_features(torch.rand(1, 3, 64, 64))
    net = router_encoder.efficientnet_lite0()
    assert isinstance(net._bn0, torch.nn.BatchNorm2d)
    assert all(isinstance(block._bn2, torch.nn.BatchNorm2d) for block in net._blocks)
    assert net._conv_stem.weight.is_contiguous()


@pytest.mark.parametrize("bad, expected", [(float("nan"), 0.0), (float("inf"), 1.0), (-0.5, 0.0), (1.5, 1.0)])
def test_input_check_fast_path_cleans_bad_pixels(bad, expected):
    from uir_lora.sampler.restore import as_image_batch

    image = torch.rand(1, 3, 8, 8)
    image[0, 1, 2, 3] = bad
    cleaned = as_image_batch(image)
    assert cleaned[0, 1, 2, 3] == expected
    torch.testing.assert_close(cleaned[0, 0], image[0, 0], atol=0, rtol=0)
    good = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(as_image_batch(good), good.float())


def test_fused_merge_is_bit_identical_to_w0_plus_the_weighted_deltas(embedded_backbone, random_bank):
    """The merged weights are exactly W0 + sum_i s_i dW_i (float32, summed in the bank's order), and W0
    comes back bit for bit afterwards."""
    from uir_lora.compose.composer import Composition, composed

    weights = {"noise": 0.7, "haze": -0.4, "jpeg": 1.3}
    adapters = random_bank.attach(embedded_backbone)
    layers = embedded_backbone.lora_layers()
    base = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    expected = []
    for layer, w0 in zip(layers, base):
        delta = torch.zeros_like(w0)
        for name, scale in weights.items():
            delta += scale * layer.get_delta_weight(adapters[name]).float()
        expected.append(w0 + delta)
    with composed(embedded_backbone, Composition(bank=random_bank, weights=weights)):
        for layer, want in zip(layers, expected):
            assert torch.equal(layer.get_base_layer().weight, want)
            assert layer.disable_adapters
    for layer, w0 in zip(layers, base):
        assert torch.equal(layer.get_base_layer().weight, w0)


def test_the_trunk_holds_ordinary_tensors():
    """Built on first use inside inference mode, but usable outside it (no inference tensors cached)."""
    DegradationEncoder().block_features(torch.rand(1, 3, 64, 64))
    trunk = router_encoder._trunk(max(EncoderSpec().blocks))
    assert not any(p.is_inference() for p in trunk.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in trunk.parameters() if p.ndim == 4)


def test_a_restore_hashes_the_manifest_once_per_step_not_once_per_lora(embedded_backbone, monkeypatch, photo):
    """The bank's key hashes the whole manifest, which a presence router makes large; routing and attaching need
    it once each, not once per LoRA."""
    from uir_lora import pipeline
    from uir_lora.bank.store import LoraBank

    bank = pipeline.load_bank()
    assert len(bank.manifest.loras) > 3
    calls = []
    original = LoraBank.key.fget
    # noisy, so that the router keeps a LoRA and the bank is attached (a clean crop comes back untouched)
    noisy = (photo[..., :64, :64] + 0.1 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    monkeypatch.setattr(LoraBank, "key", property(lambda self: calls.append(1) or original(self)))
    pipeline.restore(noisy.clamp(0, 1), embedded_backbone, bank)
    assert 1 <= len(calls) <= 2, f"the manifest was hashed {len(calls)} times for one restore"
    assert set(bank.peft_names().values()) <= set(embedded_backbone.adapter_names())
