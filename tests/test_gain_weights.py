"""Weights from expected gain: router.expected_gain_weights, its manifest field and lab/router/gain.py."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.errors import BankError
from uir_lora.lab.router.gain import measure_gain, record_gain
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.router.router import expected_gain_weights


def test_the_weight_minimises_the_expected_squared_error():
    presence, gain, cost = 0.6, 4.0, 1.0
    weights, notes = expected_gain_weights({"haze": presence}, {"haze": gain / cost})
    grid = torch.linspace(0, 1, 10001)
    expected_error = presence * (1 - grid) ** 2 * gain + (1 - presence) * grid ** 2 * cost
    assert weights["haze"] == pytest.approx(float(grid[expected_error.argmin()]), abs=1e-3)
    assert notes and "haze 0.60 -> 0.86" in notes[0]


def test_a_ratio_of_one_or_none_keeps_the_presence_and_a_small_one_lowers_it():
    weights, notes = expected_gain_weights({"jpeg": 0.7, "noise": 0.4, "blur": 0.8},
                                           {"jpeg": 1.0, "blur": 0.25})
    assert weights["jpeg"] == pytest.approx(0.7) and weights["noise"] == pytest.approx(0.4)
    assert weights["blur"] == pytest.approx(0.8 * 0.25 / (0.8 * 0.25 + 0.2))
    assert weights["blur"] < 0.8 and "jpeg" not in notes[0] and "blur 0.80 -> 0.50" in notes[0]
    assert expected_gain_weights({"jpeg": 0.7}, {}) == ({"jpeg": 0.7}, [])
    assert expected_gain_weights({"haze": 1.0}, {"haze": 0.01})[0]["haze"] == pytest.approx(1.0)  # sure damage


def _logit_bank(root, backbone, encoder_dim, biases: dict[str, float]):
    bank = make_random_bank(root, backbone, names=tuple(biases), dim=encoder_dim, conditioning={"sigma": 25 / 255})
    manifest = read_manifest(bank)
    for entry in manifest.loras:
        entry.embedding = [0.0] * encoder_dim + [biases[entry.name]]
    manifest.router.similarity, manifest.router.normalisation = "logit", "sigmoid"
    manifest.router.temperature, manifest.router.confidence_full = 1.0, 0.5
    write_manifest(manifest, bank)
    return bank


def test_the_automatic_restore_applies_the_gain_weights_and_manual_weights_stay(tmp_path, embedded_backbone,
                                                                             encoder_dim, photo):
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, {"noise": 0.5, "haze": 0.0, "clean": -3.0})
    manifest = read_manifest(bank)
    manifest.loras[manifest.names.index("haze")].gain_ratio = 9.0
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    assert routing.weights["haze"] == pytest.approx(0.5), "the router's answer stays the presence"
    composition = pipeline.compose(open_bank(bank), routing)
    assert composition.weights["haze"] == pytest.approx(0.9)
    assert composition.weights["noise"] == pytest.approx(routing.weights["noise"]), "no ratio: the presence"
    assert any("haze 0.50 -> 0.90" in note for note in pipeline.restore_notes(open_bank(bank), routing))
    assert pipeline.compose(open_bank(bank), routing, {"haze": 0.3}, "override").weights["haze"] == 0.3
    assert pipeline.compose(open_bank(bank), routing, {"haze": 0.3}, "manual").weights == {"haze": 0.3}


@pytest.mark.parametrize("value", [0, -1.0, True, 1e7, "2"])
def test_the_gain_ratio_is_checked_and_written_only_when_set(tmp_path, embedded_backbone, encoder_dim, value):
    bank = make_random_bank(tmp_path, embedded_backbone, names=("noise", "clean"), dim=encoder_dim)
    data = json.loads((bank / "manifest.json").read_text())
    assert all("gain_ratio" not in entry for entry in data["loras"])
    data["loras"][0]["gain_ratio"] = value
    (bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="gain_ratio must be null or a number in"):
        read_manifest(bank)


def test_measured_gain_is_recorded_and_nothing_else_changes(tmp_path, embedded_backbone, encoder_dim):
    bank = make_random_bank(tmp_path, embedded_backbone, names=("noise", "jpeg", "mosaic", "clean"), dim=encoder_dim,
                            conditioning={"sigma": 25 / 255})
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bank.glob("*.safetensors")}
    photos = [torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(n)) for n in range(2)]
    report = measure_gain(bank, photos, severities=(0.5,))
    assert set(report) == {"noise", "jpeg"}, "only built-in kinds can be drawn; a user's own kind keeps its presence"
    assert report["noise"]["damaged"] == 4 and report["noise"]["clean"] == 2
    assert all(row["ratio"] > 0 and row["cost"] >= 0 for row in report.values())
    record_gain(bank, report, "two test photos")
    manifest = read_manifest(bank)
    assert manifest.lora("noise").gain_ratio == pytest.approx(report["noise"]["ratio"], rel=1e-3)
    assert manifest.lora("mosaic").gain_ratio is None and manifest.lora("clean").gain_ratio is None
    assert manifest.lora("jpeg").validation["gain"]["photos"] == "two test photos"
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bank.glob("*.safetensors")}
