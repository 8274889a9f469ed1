"""train-router's last step: top-K and the temperature chosen by restoration PSNR, written to the manifest."""

from __future__ import annotations

import hashlib
import math

import pytest

from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.errors import InputError
from uir_lora.lab.evaluate.harness import Case
from uir_lora.lab.router.temperature import best_top2, combo_key, record_choice, sweep

CASES = [Case(("noise",)), Case(("haze",)), Case(("noise", "jpeg"))]
COMBOS = ((1, None), (2, None), (2, 0.02), (2, 0.5))


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.safetensors")}


def test_sweep_scores_every_combination_and_case(random_bank, photo):
    result = sweep(random_bank.root, [photo[..., :64, :64]], CASES, COMBOS)
    assert set(result["mean"]) == {combo_key(k, t) for k, t in COMBOS}
    for key, per_case in result["psnr"].items():
        assert set(per_case) == {case.name for case in CASES}
        assert all(math.isfinite(v) and v > 5 for v in per_case.values()), (key, per_case)
    assert result["mean_pairs"]["k2 T=0.02"] == pytest.approx(result["psnr"]["k2 T=0.02"]["noise+jpeg"])
    # a wide temperature spreads the weights, so it restores differently from the learned one
    assert result["psnr"]["k2 T=0.5"] != result["psnr"]["k2 T=learned"]


def test_best_top2_is_the_best_two_lora_mean_and_never_top1():
    result = {"learned_temperature": 0.013,
              "mean": {"k1 T=learned": 30.0, "k2 T=learned": 25.0, "k2 T=0.006": 26.5, "k2 T=0.05": 26.1}}
    assert best_top2(result) == (2, 0.006, "k2 T=0.006")
    result["mean"]["k2 T=learned"] = 27.0
    assert best_top2(result) == (2, 0.013, "k2 T=learned")


def test_record_choice_writes_the_router_defaults_only(random_bank, photo):
    before = file_hashes(random_bank.root)
    others = read_manifest(random_bank.root)
    result = sweep(random_bank.root, [photo[..., :64, :64]], CASES, COMBOS)
    top_k, temperature = record_choice(random_bank.root, result, "one test photo", "pytest")
    written = read_manifest(random_bank.root)
    assert (written.router.top_k, written.router.temperature) == (top_k, temperature) == best_top2(result)[:2]
    assert written.router.calibration["temperature_sweep"]["chosen"] == best_top2(result)[2]
    assert [entry.embedding for entry in written.loras] == [entry.embedding for entry in others.loras]
    assert file_hashes(random_bank.root) == before


def test_the_sweep_restores_with_the_banks_own_backbone_or_says_what_to_do(random_bank, photo):
    manifest = read_manifest(random_bank.root)
    manifest.backbone_family = "spandrel"  # a user's model file: the bank does not say which
    write_manifest(manifest, random_bank.root)
    with pytest.raises(InputError, match="--temperature-photos 0"):
        sweep(random_bank.root, [photo[..., :64, :64]], CASES, COMBOS)
