"""The exposure check: low light must also show in the photo's highlights, which under-exposure darkens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from uir_lora.bank.manifest import EXPOSURE_STOPS, read_manifest
from uir_lora.errors import BankError
from uir_lora.global_stage.adapter import ANCHOR_LEVEL, GlobalAdapter, underexposure_stops
from uir_lora.pipeline import DEFAULT_BANK, load_bank
from uir_lora.router.router import Router, scaled_presence_logit


@pytest.fixture(scope="module")
def shipped() -> Path:
    return load_bank(DEFAULT_BANK).root


def test_underexposure_is_the_lift_to_the_anchor_in_stops():
    bright = torch.rand(1, 3, 96, 80) * 0.5
    bright[..., :20, :20] = 1.0  # highlights above the anchor: nothing to lift
    assert underexposure_stops(bright).item() == 0.0
    assert underexposure_stops(bright * ANCHOR_LEVEL / 4).item() == pytest.approx(2.0, abs=1e-4)
    assert underexposure_stops(bright * 1e-3).item() == pytest.approx(5.0)  # the anchor's five stops at most


def test_the_adapters_anchor_lifts_by_the_same_measure():
    adapter = GlobalAdapter(anchor=True).eval()
    thumb = torch.rand(2, 3, 64, 64) * torch.tensor([0.2, 0.6]).view(2, 1, 1, 1)
    with torch.no_grad():
        exposure = adapter(thumb).exposure
    assert torch.allclose(exposure.flatten() / math.log(2), underexposure_stops(thumb), atol=1e-5)


def test_the_scaled_logit_scales_the_presence():
    logits = torch.tensor([[-4.0, -0.5, 0.0, 3.0, 25.0]])
    for factor in (0.0, 0.1, 0.5, 0.9):
        scaled = scaled_presence_logit(logits, torch.tensor([[factor]]))
        assert torch.allclose(torch.sigmoid(scaled), torch.sigmoid(logits) * max(factor, 1e-6), rtol=1e-4)
    assert torch.equal(scaled_presence_logit(logits, torch.ones(1, 1)), logits)
    assert scaled_presence_logit(logits, torch.zeros(1, 1)).max() < -13


def test_low_light_needs_dark_highlights_and_other_kinds_are_untouched(bank_with, photo_256):
    router = Router.of_folder(bank_with("bank", exposure_kinds=["low_light"]))
    plain = Router.of_folder(bank_with("plain", exposure_kinds=None))
    assert [router.names[i] for i in router.exposure_index] == ["low_light"] and not plain.exposure_index
    lit = photo_256.clone()
    lit[..., :32, :32] = 1.0  # highlights at white: no under-exposure
    images = torch.cat([lit, lit * 0.1])  # the second: more than three stops under
    factors = router.exposure_factors(images)
    assert factors.tolist() == [0.0, 1.0]
    checked, crops_only = router.scores(images).similarities, plain.scores(images).similarities
    low_light = router.names.index("low_light")
    others = [i for i in range(len(router.names)) if i != low_light]
    assert torch.equal(checked[:, others], crops_only[:, others])
    assert torch.equal(checked[1, low_light], crops_only[1, low_light])  # under-exposed: as the encoder reads it
    assert torch.sigmoid(checked[0, low_light]) < 1e-5  # lit highlights: low light vetoed
    assert torch.sigmoid(crops_only[1, low_light]) > 0.5, "the darkened photo must read as low light"
    assert "low_light" in router.route(images[1:])[0].weights


@pytest.mark.parametrize("edit, message", [
    ({"exposure_stops": [0.8, 0.2]}, "exposure_stops must be two numbers of stops in"),
    ({"exposure_stops": [0.2, 6.0]}, r"exposure_stops must be two numbers of stops in \[0.0, 5.0\]"),
    ({"exposure_stops": [0.2]}, "exposure_stops must be two numbers"),
    ({"exposure_stops": [0.2, True]}, "exposure_stops must be two numbers"),
    ({"exposure_kinds": "low_light"}, "exposure_kinds must be a list of LoRA names"),
])
def test_a_bad_exposure_check_is_refused_with_its_field(bank_with, edit, message):
    folder = bank_with("bank", **edit)
    with pytest.raises(BankError, match=message):
        read_manifest(folder)


def test_the_default_stops_are_not_written_and_others_are(bank_with, shipped):
    manifest = read_manifest(shipped)
    assert tuple(manifest.router.exposure_stops) == EXPOSURE_STOPS
    assert "exposure_stops" not in manifest.to_json()["router"]
    changed = read_manifest(bank_with("bank", exposure_stops=[0.1, 0.4]))
    assert changed.router.exposure_stops == [0.1, 0.4]
    assert changed.to_json()["router"]["exposure_stops"] == [0.1, 0.4]


def test_the_routing_notes_name_a_vetoed_kind(bank_with, photo_256):
    router = Router.of_folder(bank_with("bank", exposure_kinds=["low_light"]))
    lit = photo_256.clone()
    lit[..., :32, :32] = 1.0
    dim = lit * 0.1
    dim[..., :32, :32] = 1.0  # darkened, but its lights still at white: read as low light, not confirmed
    read = router.feature_scores(router.encoder.features(dim)).similarities[0, router.names.index("low_light")]
    assert read > 0, "the encoder must read the darkened photo as low light for this test to mean anything"
    result = router.route(dim)[0]
    assert "low_light" not in result.weights
    assert any(note.startswith("low_light doubted: the encoder reads it") and "0.00 stops under" in note
               for note in result.notes)
    assert not any("doubted: the encoder" in note for note in router.route(lit * 0.1)[0].notes)
