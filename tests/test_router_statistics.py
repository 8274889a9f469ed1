"""The router's hand-made degradation statistics, photo-scale degradation of its examples, and the
subspace-residual unknown test."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from uir_lora.bank.manifest import EncoderSpec, decode_matrix, encode_matrix, parse_manifest
from uir_lora.errors import BankError
from uir_lora.lab.router.data import FRAME_SIDES, at_photo_scale
from uir_lora.lab.router.fit import calibrate_residual, known_subspace
from uir_lora.router import statistics as stats
from uir_lora.router.encoder import DegradationEncoder
from uir_lora.router.router import RoutingResult, subspace_residual, unknown_mask

# Offsets of each group in degradation_statistics' output (the order of its parts).
SPECTRUM = stats.RADIAL_BINS + stats.ANGLE_BINS * len(stats.ANGLE_BANDS)
BLOCKS = slice(SPECTRUM, SPECTRUM + 4)
NOISE = slice(SPECTRUM + 4, SPECTRUM + 11)
IMPULSES = slice(stats.statistics_dim() - 2, stats.statistics_dim())
HIGH_BAND = slice(stats.RADIAL_BINS + stats.ANGLE_BINS, SPECTRUM)


@pytest.fixture(scope="module")
def crop() -> torch.Tensor:
    """scikit-image's astronaut (public domain), 512 px reduced to 224: a photo with detail and flat areas."""
    data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=(224, 224), mode="area").clamp(0, 1)


def test_shape_finite_and_batch_independent(crop):
    batch = torch.cat([crop, crop.flip(-1) * 0.5, torch.zeros_like(crop), torch.ones_like(crop)])
    out = stats.degradation_statistics(batch)
    assert out.shape == (4, stats.statistics_dim())
    assert torch.isfinite(out).all()  # flat black and white crops included
    torch.testing.assert_close(out[1:2], stats.degradation_statistics(batch[1:2]), atol=1e-4, rtol=1e-4)


def test_noise_level_grows_with_the_noise(crop):
    gen = torch.Generator().manual_seed(0)
    noisy = [(crop + sigma * torch.randn(crop.shape, generator=gen)).clamp(0, 1) for sigma in (0.0, 0.02, 0.08)]
    levels = stats.degradation_statistics(torch.cat(noisy))[:, NOISE][:, :3].mean(dim=1)
    assert levels[0] < levels[1] < levels[2]
    assert levels[2] - levels[0] > 1.0  # log scale: several times the clean photo's level


def test_signal_dependent_noise_is_told_from_gaussian(crop):
    """Poisson noise is stronger in bright regions than in dark ones; Gaussian noise is not."""
    gen = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.05, 0.95, 224).view(1, 1, 1, 224).expand(1, 3, 224, 224)
    gaussian = (ramp + 0.05 * torch.randn(ramp.shape, generator=gen)).clamp(0, 1)
    poisson = (torch.poisson(ramp * 60, generator=gen) / 60).clamp(0, 1)
    bright_over_dark = stats.degradation_statistics(torch.cat([gaussian, poisson]))[:, NOISE.stop - 1]
    assert bright_over_dark[1] - bright_over_dark[0] > 0.5


def test_jpeg_blocks_are_seen(crop):
    buffer = io.BytesIO()
    Image.fromarray((crop[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(buffer, "JPEG", quality=10)
    jpeg = torch.from_numpy(np.asarray(Image.open(buffer), dtype="float32") / 255)
    jpeg = jpeg.permute(2, 0, 1)[None]
    shifted = jpeg[..., 3:, 5:]  # the 8 px grid anywhere in the crop
    clean = crop[..., 3:, 5:]
    blockiness = stats.degradation_statistics(torch.cat([clean, shifted]))[:, BLOCKS][:, [0, 2]]
    assert (blockiness[1] > blockiness[0] + 0.3).all()


def test_motion_blur_removes_one_direction(crop):
    """A horizontal box blur empties the horizontal frequencies: the sorted angular profile's weakest
    direction drops far more than under an isotropic blur of similar strength."""
    line = torch.zeros(1, 1, 9, 9)
    line[..., 4, :] = 1 / 9
    disk = torch.ones(1, 1, 3, 3) / 9
    motion = F.conv2d(F.pad(crop, (4, 4, 4, 4), mode="reflect"), line.expand(3, 1, 9, 9), groups=3)
    isotropic = F.conv2d(F.pad(crop, (1, 1, 1, 1), mode="reflect"), disk.expand(3, 1, 3, 3), groups=3)
    profile = stats.degradation_statistics(torch.cat([crop, isotropic, motion]))[:, HIGH_BAND]
    spread = profile[:, 0] - profile[:, -1]  # strongest minus weakest direction, log scale
    assert spread[2] > spread[1] + 1.0
    assert spread[2] > spread[0] + 1.0


def test_impulses_count_salt_and_pepper(crop):
    gen = torch.Generator().manual_seed(2)
    hit = torch.rand(crop.shape[-2:], generator=gen) < 0.05
    salt = torch.rand(crop.shape[-2:], generator=gen) < 0.5
    speckled = torch.where(hit, salt.float().expand_as(crop), crop)
    impulses = stats.degradation_statistics(torch.cat([crop, speckled]))[:, IMPULSES]
    assert (impulses[1] > impulses[0] + 1.0).all()  # both the bright and the dark outliers


def test_encoder_appends_the_statistics_when_the_spec_asks(crop):
    with_stats, without = DegradationEncoder(EncoderSpec()), DegradationEncoder(EncoderSpec(statistics=False))
    assert with_stats.dim == without.dim + stats.statistics_dim()
    a, b = with_stats.features(crop), without.features(crop)
    torch.testing.assert_close(a[:, : without.dim], b)
    torch.testing.assert_close(a[:, without.dim :], stats.degradation_statistics(crop), atol=1e-5, rtol=1e-5)


def test_a_manifest_without_statistics_reads_as_without(random_bank):
    data = json.loads((random_bank.root / "manifest.json").read_text())
    data["encoder"].pop("statistics", None)
    assert parse_manifest(data).encoder.statistics is False
    data["encoder"]["statistics"] = "yes"
    with pytest.raises(BankError, match="statistics"):
        parse_manifest(data)


def test_crops_are_degraded_as_windows_of_larger_photos():
    seen = []

    def fake_degrade(image, kind, *, generator, frame_side=None, severity=None):
        seen.append(frame_side)
        return image

    window = at_photo_scale(fake_degrade)
    gen = torch.Generator().manual_seed(0)
    for size in (64, 224, 300):
        for _ in range(40):
            window(torch.zeros(1, 3, size, size), "raindrop", generator=gen)
    sizes = [64] * 40 + [224] * 40 + [300] * 40
    assert all(max(size, FRAME_SIDES[0]) <= side <= max(size, FRAME_SIDES[1]) for size, side in zip(sizes, seen))
    assert min(seen[40:80]) < 400 and max(seen[40:80]) > 800  # spread over the range, not one size
    again = at_photo_scale(fake_degrade)
    seen_before, seen[:] = list(seen), []
    gen = torch.Generator().manual_seed(0)
    for size in (64, 224, 300):
        for _ in range(40):
            again(torch.zeros(1, 3, size, size), "raindrop", generator=gen)
    assert seen == seen_before  # seeded by the caller's generator


def test_raindrops_on_a_crop_of_a_larger_photo_are_larger(crop):
    from uir_lora.degrade import degrade

    small = degrade(crop, "raindrop", generator=torch.Generator().manual_seed(3), severity=0.5)
    large = degrade(crop, "raindrop", generator=torch.Generator().manual_seed(3), severity=0.5, frame_side=1024)
    assert not torch.equal(small, large)


def test_subspace_residual_is_zero_inside_and_one_outside():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, 3, generator=gen) @ torch.randn(3, 40, generator=gen)  # rank 3 in 40-d
    basis = known_subspace(z, 3)
    assert basis.shape == (3, 40)
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-5, rtol=0)
    assert subspace_residual(z, basis).max() < 1e-3
    outside = torch.randn(50, 40, generator=gen)
    outside -= (outside @ basis.T) @ basis
    torch.testing.assert_close(subspace_residual(outside, basis), torch.ones(50), atol=1e-3, rtol=0)
    assert known_subspace(z, 500).shape == (40, 40)  # the rank is capped by the data


def test_subspace_round_trips_through_the_manifest_text():
    basis = known_subspace(torch.randn(50, 12, generator=torch.Generator().manual_seed(4)), 5)
    assert torch.equal(decode_matrix(encode_matrix(basis), 12, "test"), basis)


def test_residual_threshold_is_a_quantile_and_flags():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(400, 30, generator=gen)
    basis = known_subspace(z, 10)
    threshold = calibrate_residual(z, basis, 0.05)
    residual = subspace_residual(z, basis)
    share = float((residual > threshold).float().mean())
    assert 0.03 <= share <= 0.06
    flagged = unknown_mask(torch.ones(400), None, None, None, residual, threshold)
    assert torch.equal(flagged, residual > threshold)
    result = RoutingResult(similarities={"noise": 0.9}, weights={"noise": 1.0}, top_k=1, temperature=0.1,
                           normalisation="softmax", residual=0.8, residual_threshold=0.5)
    assert result.unknown and "0.800 > 0.500" in result.unknown_reason
    result.residual = 0.4
    assert not result.unknown


@pytest.mark.parametrize("edit, message", [
    ({"unknown_residual": 1.5}, "unknown_residual"),
    ({"unknown_subspace": [[0.0, 1.0]]}, "base64 string"),
    ({"unknown_subspace": ""}, "float32 rows"),
    ({"unknown_subspace": "basis!"}, "not valid base64"),
    ({"unknown_subspace": encode_matrix(torch.ones(1, 7))}, "float32 rows"),
    ({"unknown_subspace": "nan-row"}, "NaN"),
])
def test_manifest_refuses_a_bad_subspace(random_bank, edit, message):
    data = json.loads((random_bank.root / "manifest.json").read_text())
    if edit["unknown_subspace" if "unknown_subspace" in edit else "unknown_residual"] == "nan-row":
        edit = {"unknown_subspace": encode_matrix(torch.full((1, data["encoder"]["dim"]), float("nan")))}
    data["router"].update(edit)
    with pytest.raises(BankError, match=message):
        parse_manifest(data)


def test_whole_photos_are_encoded_per_draw_and_cached(tmp_path):
    from uir_lora.lab.router.data import CLEAN, encode_photos

    class MeanEncoder:
        spec = EncoderSpec()
        calls = 0

        def spec_key(self) -> dict:
            return {"mean": 1}

        def features(self, image: torch.Tensor) -> torch.Tensor:
            MeanEncoder.calls += 1
            return image.mean(dim=(2, 3))

    def brighten(image, name, *, generator):
        return image + 0.1 * float(torch.rand((), generator=generator))

    photos = [torch.full((1, 3, 40, 60), 0.2), torch.full((1, 3, 50, 30), 0.5)]
    encoder = MeanEncoder()
    out = encode_photos(encoder, photos, "haze", brighten, 7, 3, cache_key={"test": 1}, cache_dir=tmp_path)
    assert out.shape == (6, 3) and MeanEncoder.calls == 6
    assert (out[:3] > 0.2).all() and (out[:3] < 0.3).all() and len(set(out[:3, 0].tolist())) == 3  # own draws
    again = encode_photos(encoder, photos, "haze", brighten, 7, 3, cache_key={"test": 1}, cache_dir=tmp_path)
    assert torch.equal(again, out) and MeanEncoder.calls == 6  # from the cache
    clean = encode_photos(encoder, photos, CLEAN, brighten, 7, 1, cache_key={"test": 1}, cache_dir=tmp_path)
    torch.testing.assert_close(clean, torch.tensor([[0.2] * 3, [0.5] * 3]))
