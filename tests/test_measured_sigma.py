"""A LoRA whose FFDNet sigma is each photo's own noise level (``LoraEntry.measured``): the measurement, the
manifest field, the composition's conditioning and the samplers that pass it on."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uir_lora.backbones.noise_level import noise_level
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition
from uir_lora.errors import BankError
from uir_lora.pipeline import compose
from uir_lora.sampler.restore import SamplerOptions, restore_batch
from uir_lora.sampler.spatial import restore_regions

CEILING = 75 / 255


def shaded(side: int = 160) -> torch.Tensor:
    """A smooth photo-like image: gradients in each channel, no texture."""
    ramp = torch.linspace(0.2, 0.8, side)
    return torch.stack([ramp[None, :].expand(side, side), ramp[:, None].expand(side, side),
                        (ramp[None, :] + ramp[:, None]).expand(side, side) / 2])[None]


@pytest.mark.parametrize("sigma", [5 / 255, 15 / 255, 30 / 255])
def test_white_noise_reads_its_level(sigma):
    noisy = shaded() + sigma * torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    assert float(noise_level(noisy)[0]) == pytest.approx(sigma, rel=0.12)


def test_clean_and_correlated_noise():
    clean = shaded()
    assert float(noise_level(clean)[0]) < 0.3 / 255
    white = 20 / 255 * torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    blurred = torch.nn.functional.avg_pool2d(white, 3, 1, 1) * 3  # the same deviation, correlated over 3 px
    assert float(noise_level(clean + blurred)[0]) > 0.4 * float(noise_level(clean + white)[0])


def test_batches_and_sizes():
    batch = torch.cat([shaded(), shaded() + 0.05 * torch.randn(1, 3, 160, 160)])
    levels = noise_level(batch)
    assert levels.shape == (2,) and levels[1] > 10 * levels[0]
    assert noise_level(torch.rand(1, 3, 5, 5)).tolist() == [0.0]  # smaller than one block
    big = noise_level(torch.rand(1, 3, 1100, 1300))  # measured on a centred crop
    assert big.shape == (1,) and torch.isfinite(big).all()


@pytest.fixture()
def measured_bank(random_bank):
    """The random bank with its noise LoRA measuring sigma, at most CEILING."""
    manifest = read_manifest(random_bank.root)
    noise = manifest.lora("noise")
    noise.conditioning, noise.measured = {"sigma": CEILING}, ["sigma"]
    write_manifest(manifest, random_bank.root)
    return open_bank(random_bank.root)


def test_manifest_field(measured_bank, random_bank):
    assert measured_bank.manifest.lora("noise").measured == ["sigma"]
    assert read_manifest(measured_bank.root).to_json()["loras"][0]["measured"] == ["sigma"]
    assert all("measured" not in entry for entry in read_manifest(measured_bank.root).to_json()["loras"][1:])
    manifest = read_manifest(measured_bank.root)
    manifest.lora("noise").conditioning = {}
    with pytest.raises(BankError, match="measured names \\['sigma'\\] that conditioning does not record"):
        write_manifest(manifest, measured_bank.root)
        read_manifest(measured_bank.root)


def test_conditioning_follows_the_measurement_under_the_ceiling(embedded_backbone, measured_bank):
    alone = Composition(bank=measured_bank, weights={"noise": 1.0})
    assert alone.conditioning(embedded_backbone, {"sigma": 0.05})["sigma"] == pytest.approx(0.05)
    assert alone.conditioning(embedded_backbone, {"sigma": 0.9})["sigma"] == pytest.approx(CEILING)
    assert alone.conditioning(embedded_backbone)["sigma"] == pytest.approx(CEILING)  # not measured: the ceiling
    jpeg = measured_bank.manifest.lora("jpeg").conditioning["sigma"]
    both = Composition(bank=measured_bank, weights={"noise": 1.0, "jpeg": 1.0})
    assert both.conditioning(embedded_backbone, {"sigma": 0.05})["sigma"] == pytest.approx((0.05**2 + jpeg**2) ** 0.5)
    other = Composition(bank=measured_bank, weights={"jpeg": 1.0})
    assert other.conditioning(embedded_backbone, {"sigma": 0.01})["sigma"] == pytest.approx(jpeg)


def test_measured_only_where_a_lora_asks(embedded_backbone, measured_bank, photo, monkeypatch):
    calls = []
    original = embedded_backbone.measure_conditioning

    def counted(images):
        calls.append(images.shape)
        return original(images)

    monkeypatch.setattr(embedded_backbone, "measure_conditioning", counted)
    assert Composition(bank=measured_bank, weights={"jpeg": 1.0}).measure(embedded_backbone, photo) == {}
    assert not calls
    measured = Composition(bank=measured_bank, weights={"noise": 1.0}).measure(embedded_backbone, photo)
    assert measured == {"sigma": pytest.approx(float(noise_level(photo)[0]))} and len(calls) == 1


def told_sigmas(backbone, monkeypatch) -> list[float]:
    """Record the sigma each restore_step of ``backbone`` is told."""
    told: list[float] = []
    original = backbone.restore_step  # the instance's (another test's monkeypatch may have left one there)

    def spy(image, conditioning, **kwargs):
        told.append(float(torch.as_tensor(conditioning["sigma"]).flatten()[0]))
        return original(image, conditioning, **kwargs)

    monkeypatch.setattr(backbone, "restore_step", spy)
    return told


@pytest.mark.parametrize("tile", [64, 512])
def test_restore_tells_the_backbone_the_whole_photos_level(embedded_backbone, measured_bank, photo, monkeypatch, tile):
    noisy = (photo + 10 / 255 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    told = told_sigmas(embedded_backbone, monkeypatch)
    options = SamplerOptions(tile=tile)
    restore_batch(embedded_backbone, noisy, [compose(measured_bank, None, {"noise": 1.0})], options)
    level = float(noise_level(noisy)[0])
    assert 5 / 255 < level < CEILING and told and all(value == pytest.approx(level) for value in told)
    told.clear()
    restore_batch(embedded_backbone, noisy, [compose(measured_bank, None, {"jpeg": 1.0})], options)
    assert all(value == pytest.approx(measured_bank.manifest.lora("jpeg").conditioning["sigma"]) for value in told)


def test_per_region_restore_measures_the_whole_photo(embedded_backbone, measured_bank, photo, monkeypatch):
    from uir_lora.pipeline import estimate_spatial

    noisy = (photo + 10 / 255 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    (regions,) = estimate_spatial(measured_bank, noisy, window=64)
    regions = dataclasses.replace(regions, maps=torch.zeros_like(regions.maps))
    regions.maps[regions.names.index("noise")] = 1.0
    told = told_sigmas(embedded_backbone, monkeypatch)
    restore_regions(embedded_backbone, noisy, [regions], lambda r: compose(measured_bank, r), SamplerOptions(tile=64))
    assert told and all(value == pytest.approx(float(noise_level(noisy)[0])) for value in told)
