"""Which noise LoRA a noisy photo gets: the noise model measured on the image (router/noise_model.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.router.noise_model import noise_member, shot_noise_share
from uir_lora.router.spatial import estimate_regions


def _scene(side: int = 192, seed: int = 0) -> torch.Tensor:
    """A smooth photo-like field whose brightness runs from dark to light, with a few soft shapes."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.08, 0.92, side).view(1, 1, 1, side).expand(1, 3, side, side)
    coarse = torch.rand(1, 3, 4, 4, generator=gen) * 0.12 - 0.06
    shapes = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    return (ramp + shapes).clamp(0.02, 0.98)


def _additive(image: torch.Tensor, sigma: float, grey: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (1, 1, *image.shape[-2:]) if grey else image.shape
    return (image + sigma * torch.randn(shape, generator=gen)).clamp(0, 1)


def _shot(image: torch.Tensor, peak: float, grey: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if grey:  # on the luminance, the same counts' error in every channel
        luma = image.mean(dim=1, keepdim=True)
        return (image + torch.poisson(luma * peak, generator=gen) / peak - luma).clamp(0, 1)
    return (torch.poisson(image * peak, generator=gen) / peak).clamp(0, 1)


@pytest.mark.parametrize("sigma", [8 / 255, 25 / 255])
@pytest.mark.parametrize("grey", [False, True])
def test_additive_noise_is_named_noise(sigma, grey):
    noisy = torch.cat([_additive(_scene(seed=s), sigma, grey, seed=s) for s in range(3)])
    assert noise_member(noisy) == ["noise"] * 3
    assert (shot_noise_share(noisy) < 0.3).all()


@pytest.mark.parametrize("peak", [15.0, 60.0])
@pytest.mark.parametrize("grey", [False, True])
def test_shot_noise_is_named_poisson_noise(peak, grey):
    noisy = torch.cat([_shot(_scene(seed=s), peak, grey, seed=s) for s in range(3)])
    assert noise_member(noisy) == ["poisson_noise"] * 3
    assert (shot_noise_share(noisy) > 0.7).all()


def test_no_answer_without_noise_or_without_a_range_of_brightness():
    flat = torch.full((1, 3, 128, 128), 0.5)
    photos = [_scene(), _additive(flat, 0.1, False, 0), torch.rand(1, 3, 8, 8)]
    assert [noise_member(photo)[0] for photo in photos] == [None, None, None]


def test_a_large_photo_is_measured_on_a_bounded_crop():
    big = _shot(_scene(side=1400), 30.0, False, seed=1)
    assert noise_member(big) == ["poisson_noise"]


def _noise_bank(tmp_path, backbone, dim):
    """Both noise heads and haze, the additive-noise head the stronger one, for every image alike."""
    biases = {"noise": 0.0, "poisson_noise": -1.0, "haze": -1.5, "clean": -3.0}
    bank = make_random_bank(tmp_path, backbone, names=tuple(biases), dim=dim, conditioning={"sigma": 25 / 255})
    manifest = read_manifest(bank)
    for entry in manifest.loras:
        entry.embedding = [0.0] * dim + [biases[entry.name]]
    manifest.router.similarity, manifest.router.normalisation, manifest.router.temperature = "logit", "sigmoid", 1.0
    manifest.router.alternatives = [["noise", "poisson_noise"]]
    write_manifest(manifest, bank)
    return open_bank(bank), biases


def test_the_router_gives_the_noise_group_to_the_member_the_noise_model_names(tmp_path, embedded_backbone,
                                                                               encoder_dim):
    bank, biases = _noise_bank(tmp_path, embedded_backbone, encoder_dim)
    group = float(torch.sigmoid(torch.tensor(biases["noise"])) + torch.sigmoid(torch.tensor(biases["poisson_noise"])))
    shot, additive = _shot(_scene(), 20.0, False, seed=4), _additive(_scene(), 20 / 255, False, seed=4)
    (to_shot,) = pipeline.estimate(bank, shot)
    assert set(to_shot.weights) == {"poisson_noise", "haze"}, "the weaker head's name, measured on the image"
    assert to_shot.weights["poisson_noise"] == pytest.approx(group)
    assert any("grows with brightness" in note for note in to_shot.notes)
    (to_additive,) = pipeline.estimate(bank, additive)
    assert set(to_additive.weights) == {"noise", "haze"}
    assert to_additive.weights["noise"] == pytest.approx(group)
    assert not any("brightness" in note for note in to_additive.notes), "the stronger head agreed: nothing to say"
    regions = estimate_regions(pipeline.router_for(bank), shot, window=96)
    poisson = regions.names.index("poisson_noise")
    assert (regions.weights[poisson] > 0).all(), "every region follows the whole photo's noise"
    assert (regions.weights[regions.names.index("noise")] == 0).all()


def test_the_shipped_bank_names_both_noises_on_a_photo_it_never_saw():
    bank = pipeline.load_bank(pipeline.DEFAULT_BANK)
    scene = _scene(side=256, seed=7)
    (additive,) = pipeline.estimate(bank, _additive(scene, 25 / 255, True, seed=7))
    (shot,) = pipeline.estimate(bank, _shot(scene, 20.0, False, seed=7))
    assert max(additive.weights, key=additive.weights.get) == "noise"
    assert max(shot.weights, key=shot.weights.get) == "poisson_noise"


@settings(max_examples=30, deadline=None, database=None)
@given(height=st.integers(1, 80), width=st.integers(1, 80), batch=st.integers(1, 3),
       level=st.floats(0.0, 1.0), spread=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_any_image_gets_a_name_or_no_answer_never_an_error(height, width, batch, level, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    images = (level + spread * (torch.rand(batch, 3, height, width, generator=gen) - 0.5)).clamp(0, 1)
    names = noise_member(images)
    assert len(names) == batch and set(names) <= {None, "noise", "poisson_noise"}
    shares = shot_noise_share(images)
    assert ((shares >= 0) & (shares <= 1) | shares.isnan()).all()
