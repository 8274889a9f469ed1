"""The shipped bank, end to end: what a user gets from `uir-lora restore` with no setting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from uir_lora.bank.manifest import EXPOSURE_STOPS
from uir_lora.bank.store import read_lora_file
from uir_lora.images import load_image, save_image
from uir_lora.lab.cli import main
from uir_lora.pipeline import DEFAULT_BANK, compose, load_bank
from uir_lora.router.router import RoutingResult


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def bank():
    return load_bank(DEFAULT_BANK)


def test_every_lora_is_trained_routable_and_beats_its_input(bank):
    manifest = bank.manifest
    assert len(manifest.loras) >= 10
    total_bytes = sum(path.stat().st_size for path in bank.root.iterdir())  # LoRAs, adapters, router, manifest
    assert total_bytes < 20 * 2**20
    for entry in manifest.loras:
        assert read_lora_file(bank.root / entry.file)
        assert any(abs(v) > 0 for v in entry.embedding), f"{entry.name}: placeholder embedding"
        assert entry.provenance.get("steps", 0) > 0, f"{entry.name}: no training record"
        if entry.name != "clean":
            assert entry.validation["psnr_out"] > entry.validation["psnr_in"], entry.name


def test_the_shipped_router_is_its_trained_encoder_with_s_o_equal_to_d_dot_b(bank):
    from uir_lora.router.trained import FEATURE_DIM, file_sha256, load_encoder

    manifest = bank.manifest
    assert manifest.encoder.trained and file_sha256(bank.root / manifest.encoder.file) == manifest.encoder.sha256
    router = manifest.router
    assert (router.normalisation, router.top_k, router.confidence_full, router.confidence_floor) == \
        ("sigmoid", 2, 0.5, 0.2)
    assert router.follower_floor == 0.5 and ["noise", "poisson_noise"] in router.alternatives
    assert router.doubt_temperature == 0.1 and router.whole_view_kinds == ["haze"]
    assert router.exposure_kinds == ["low_light"] and tuple(router.exposure_stops) == EXPOSURE_STOPS
    assert router.doubted_beside == {"haze": {"kinds": ["motion_blur", "defocus_blur", "low_resolution"],
                                              "presence": [0.25, 0.45]}}
    net, lda = load_encoder(bank.root / manifest.encoder.file)
    rows = dict(zip(net.class_names(), net.presence_rows()))
    for entry in manifest.loras:  # B of every LoRA is its kind's presence head: s_o = d·B is the presence logit
        assert len(entry.embedding) == FEATURE_DIM + 1
        assert torch.allclose(torch.tensor(entry.embedding), rows[entry.name], atol=1e-6), entry.name
    assert {"lda.clean_mean", "lda.precision"} <= set(lda)  # what `bank add` places a new kind with
    assert not router.examples and not (bank.root / "router_examples.safetensors").exists()


def test_the_shipped_bank_restores_noise_before_the_low_light_colour_and_haze_stages(bank):
    # sensor noise reaches a photo after its exposure, white balance and the scene's haze, so it is undone before
    # them (docs/engine.md)
    ordered = {entry.name: entry.restored_before for entry in bank.manifest.loras if entry.restored_before}
    staged = ["low_light", "color_cast", "haze"]
    assert ordered == {"noise": staged, "poisson_noise": staged}
    assert all(bank.global_adapter(kind) is not None for kind in staged)
    composition = compose(bank, manual={"low_light": 1.0, "noise": 1.0})
    first, after = composition.in_order()
    assert dict(first.weights) == {"noise": 1.0} and after is None
    # the user is told, as the router's other decisions are
    assert composition.notes == ("noise restored first, then the global stage of low_light (whose LoRA sits this "
                                 "composition out)",)
    first, after = compose(bank, manual={"haze": 1.0, "poisson_noise": 1.0}).in_order()
    assert dict(first.weights) == {"poisson_noise": 1.0} and after is None
    # a local kind beside them has no global stage to wait for: its pass follows the stage
    first, after = compose(bank, manual={"haze": 1.0, "noise": 1.0, "jpeg": 1.0}).in_order()
    assert dict(first.weights) == {"noise": 1.0} and dict(after.weights) == {"jpeg": 1.0}
    assert compose(bank, manual={"haze": 1.0, "rain": 1.0}).in_order() is None


def test_the_shipped_bank_reads_a_denoised_photo_again_for_a_global_kind_it_kept(bank):
    # noise hides haze and dark from the encoder: after noise's pass, a global kind kept at ½ or more may rise
    # (docs/engine.md); one kept below ½ is more often a false alarm, which a second reading would make sure of
    assert bank.manifest.router.reread_floor == 0.5
    kept = RoutingResult(similarities=dict.fromkeys(bank.manifest.names, 0.0), weights={"noise": 0.9, "haze": 0.6},
                         top_k=2, temperature=1.0, normalisation="sigmoid")
    assert compose(bank, kept).reread is not None
    assert compose(bank, replace(kept, weights={"noise": 0.9, "haze": 0.4})).reread is None
    assert compose(bank, manual={"noise": 0.9, "haze": 0.6}).reread is None  # manual weights are never read again


def test_the_shipped_bank_runs_a_sure_global_kind_in_full_after_noises_pass(bank):
    # a presence says how sure the router is, not how much haze there is: from 0.6 the stage runs at 1
    # (docs/engine.md, *A sure global kind runs in full after noise's pass*)
    assert bank.manifest.router.full_stage_from == 0.6


def test_the_shipped_noise_loras_are_told_each_photos_own_noise_level(bank, embedded_backbone, photo_256):
    # FFDNet is a non-blind denoiser: faint noise is denoised gently, strong noise hard (docs/engine.md)
    assert {entry.name for entry in bank.manifest.loras if entry.measured} == {"noise", "poisson_noise"}
    generator = torch.Generator().manual_seed(1)
    for name in ("noise", "poisson_noise"):
        assert bank.manifest.lora(name).conditioning == {"sigma": pytest.approx(75 / 255)}  # the ceiling
        composition = compose(bank, manual={name: 1.0})
        sigmas = []
        for level in (5 / 255, 40 / 255):
            noisy = (photo_256 + torch.randn(photo_256.shape, generator=generator) * level).clamp(0, 1)
            sigmas.append(composition.conditioning(embedded_backbone, composition.measure(embedded_backbone, noisy))
                          ["sigma"])
        assert sigmas[0] < 15 / 255 < sigmas[1] <= 75 / 255


def test_cli_restores_gaussian_noise_sigma25_by_5db(tmp_path, photo_256):
    clean = photo_256
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 25 / 255).clamp(0, 1)
    save_image(noisy, tmp_path / "noisy.png")
    assert main(["restore", str(tmp_path / "noisy.png"), "-o", str(tmp_path / "out.png")]) == 0
    noisy_q, restored = load_image(tmp_path / "noisy.png"), load_image(tmp_path / "out.png")
    assert psnr(restored, clean) >= psnr(noisy_q, clean) + 5.0


def test_bank_info_lists_every_lora_of_the_shipped_bank(bank, capsys):
    """The clean LoRA records psnr_in as null; the listing must print it like the others."""
    assert main(["bank", "info", DEFAULT_BANK]) == 0
    out = capsys.readouterr().out
    assert all(entry.name in out for entry in bank.manifest.loras)
    assert "unknown below" in out
