"""Severity-aware strength: a kind's routed weight follows how strong the encoder reads its damage."""

from __future__ import annotations

import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest
from uir_lora.bank.store import open_bank
from uir_lora.errors import BankError
from uir_lora.router.router import RoutingResult, scale_by_severity, severity_strength

RAMP = [[0.2, 0.5], [0.4, 1.0]]


def test_the_curve_is_linear_between_knots_and_flat_outside():
    assert severity_strength(RAMP, 0.0) == 0.5
    assert severity_strength(RAMP, 0.2) == 0.5
    assert severity_strength(RAMP, 0.3) == pytest.approx(0.75)
    assert severity_strength(RAMP, 0.4) == 1.0
    assert severity_strength(RAMP, 0.95) == 1.0
    assert severity_strength([[0.5, 0.8]], 0.1) == severity_strength([[0.5, 0.8]], 0.9) == 0.8


def test_only_kinds_with_a_curve_and_a_reading_are_scaled():
    weights = {"motion_blur": 0.9, "jpeg": 0.6, "snow": 0.4}
    readings = {"motion_blur": 0.25, "jpeg": 0.1, "snow": 0.9}
    scaled, notes = scale_by_severity(weights, readings, {"motion_blur": RAMP, "snow": RAMP, "haze": RAMP})
    assert scaled == {"motion_blur": pytest.approx(0.9 * 0.625), "jpeg": 0.6, "snow": 0.4}
    assert notes == ["motion_blur at 0.62 of its weight: its damage reads mild (severity 0.25)"]
    assert scale_by_severity(weights, {}, {"motion_blur": RAMP}) == (weights, [])


@pytest.mark.parametrize("curves", [
    {"motion_blur": [[0.4, 0.5], [0.2, 1.0]]},  # severities must rise
    {"motion_blur": [[0.2, 0.5], [1.2, 1.0]]},  # within 0..1
    {"motion_blur": [[0.2, 2.0]]},  # strength above 1.5
    {"motion_blur": [[0.2, True]]},
    {"motion_blur": []},
    {"motion_blur": [0.2, 0.5]},
    [["motion_blur", 0.2, 0.5]],
])
def test_a_bad_curve_is_refused_with_its_field(bank_with, curves):
    with pytest.raises(BankError, match="router.severity_strength must map LoRA names to lists of"):
        read_manifest(bank_with("bank", severity_strength=curves))


def test_no_curves_are_not_written_and_curves_are(bank_with):
    plain = read_manifest(bank_with("plain", severity_strength=None))
    assert plain.router.severity_strength == {} and "severity_strength" not in plain.to_json()["router"]
    curved = read_manifest(bank_with("curved", severity_strength={"jpeg": RAMP}))
    assert curved.to_json()["router"]["severity_strength"] == {"jpeg": RAMP}


def test_the_restore_scales_routed_weights_and_never_manual_ones(bank_with, photo_256):
    plain = open_bank(bank_with("plain", severity_strength=None))
    routing = pipeline.estimate(plain, photo_256)[0]
    assert set(routing.severities) >= set(routing.weights) - {"clean"}, "the trained encoder reads every kind"
    assert all(0.0 <= value <= 1.0 for value in routing.severities.values())
    routing.weights = {"motion_blur": 0.8, "jpeg": 0.7}  # a routing to scale, whatever the photo reads as
    routing.severities.update(motion_blur=0.3, jpeg=0.9)
    curved = open_bank(bank_with("curved", severity_strength={"motion_blur": RAMP, "jpeg": RAMP}))
    composed = pipeline.compose(curved, routing)
    assert composed.weights == {"motion_blur": pytest.approx(0.8 * 0.75), "jpeg": 0.7}
    assert any(note.startswith("motion_blur at 0.75 of its weight") for note in composed.notes)
    assert pipeline.compose(plain, routing).weights == routing.weights
    manual = pipeline.compose(curved, routing, {"motion_blur": 0.8}, mode="manual")
    assert manual.weights == {"motion_blur": 0.8} and not manual.notes
    overridden = pipeline.compose(curved, routing, {"motion_blur": 0.8}, mode="override")
    assert overridden.weights["motion_blur"] == 0.8 and not any("motion_blur at" in n for n in overridden.notes)


def test_a_router_without_readings_is_left_alone(bank_with):
    curved = open_bank(bank_with("curved", severity_strength={"motion_blur": RAMP}))
    routing = RoutingResult(similarities={"motion_blur": 2.0}, weights={"motion_blur": 0.9}, top_k=2,
                            temperature=1.0, normalisation="sigmoid")
    assert pipeline.compose(curved, routing).weights == {"motion_blur": 0.9}


def test_the_estimate_reads_a_blurred_photo_as_more_severe_than_its_clean_self(photo_256):
    bank = open_bank(pipeline.load_bank(pipeline.DEFAULT_BANK).root)
    kernel = torch.ones(1, 1, 1, 15) / 15  # a 15 px horizontal smear
    blurred = torch.nn.functional.conv2d(photo_256.transpose(0, 1), kernel, padding=(0, 7)).transpose(0, 1)
    clean, smeared = (pipeline.estimate(bank, image)[0].severities["motion_blur"] for image in (photo_256, blurred))
    assert smeared > clean + 0.2
