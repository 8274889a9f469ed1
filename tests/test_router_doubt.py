"""A kind doubted beside others: blur lowers local contrast as haze does, so a blurred pale photo reads hazy."""

from __future__ import annotations

import pytest
import torch

from uir_lora.bank.manifest import read_manifest
from uir_lora.degrade import degrade
from uir_lora.errors import BankError
from uir_lora.router.router import Router

BLUR = ["motion_blur", "defocus_blur", "low_resolution"]


def rule(kinds: list[str], presence: list[float]) -> dict:
    return {"haze": {"kinds": kinds, "presence": presence}}


def test_the_doubted_presence_follows_the_ramp_of_the_strongest_other_kind(bank_with):
    router = Router.of_folder(bank_with("bank", doubted_beside=rule(BLUR, [0.2, 0.4])))
    haze, motion, defocus = (router.names.index(name) for name in ("haze", "motion_blur", "defocus_blur"))
    logits = torch.full((4, len(router.names)), -6.0)
    logits[:, haze] = 2.0
    logits[:, motion] = torch.logit(torch.tensor([0.1, 0.3, 0.6, 0.1]))
    logits[3, defocus] = torch.logit(torch.tensor(0.35))  # the strongest of the three counts
    doubted = router.doubted(logits)
    expected = torch.sigmoid(torch.tensor(2.0)) * torch.tensor([1.0, 0.5, 0.0, 0.25])
    assert torch.allclose(torch.sigmoid(doubted[:, haze]), expected, atol=1e-5)
    assert torch.equal(doubted[0], logits[0]), "below the ramp the reading stays exactly as it was"
    others = [i for i in range(len(router.names)) if i != haze]
    assert torch.equal(doubted[:, others], logits[:, others])


def test_a_noisy_hazy_photo_loses_haze_to_a_rule_naming_noise_and_says_so(bank_with, photo_256):
    router = Router.of_folder(bank_with("bank", doubted_beside=rule(["noise"], [0.2, 0.4])))
    plain = Router.of_folder(bank_with("plain", doubted_beside=None))
    generator = torch.Generator().manual_seed(0)
    both = degrade(photo_256, ["haze", "noise"], generator=generator, severity=0.8).clamp(0, 1)
    haze_only = degrade(photo_256, ["haze"], generator=generator, severity=0.8).clamp(0, 1)
    read = plain.route(both)[0]
    assert read.weights.get("haze", 0) > 0.5 and read.weights.get("noise", 0) > 0.5, "the photo must read both"
    doubted = router.route(both)[0]
    assert "haze" not in doubted.weights and doubted.weights["noise"] == read.weights["noise"]
    assert any(note.startswith("haze doubted: read at") and "beside noise" in note for note in doubted.notes)
    assert router.route(haze_only)[0].weights == plain.route(haze_only)[0].weights
    assert not any("doubted" in note for note in router.route(haze_only)[0].notes)


@pytest.mark.parametrize("doubts", [
    rule(BLUR, [0.4, 0.2]),
    rule(BLUR, [0.2, 1.5]),
    rule(BLUR, [0.2]),
    rule(BLUR, [0.2, True]),
    rule("motion_blur", [0.2, 0.4]),
    {"haze": {"kinds": BLUR}},
    {"haze": {"kinds": BLUR, "presence": [0.2, 0.4], "extra": 1}},
    ["haze"],
])
def test_a_bad_rule_is_refused_with_its_field(bank_with, doubts):
    with pytest.raises(BankError, match="router.doubted_beside must map a LoRA name to"):
        read_manifest(bank_with("bank", doubted_beside=doubts))


def test_no_rule_is_not_written_and_a_rule_is(bank_with):
    plain = read_manifest(bank_with("plain", doubted_beside=None))
    assert plain.router.doubted_beside == {} and "doubted_beside" not in plain.to_json()["router"]
    ruled = read_manifest(bank_with("ruled", doubted_beside=rule(BLUR, [0.2, 0.4])))
    assert ruled.to_json()["router"]["doubted_beside"] == rule(BLUR, [0.2, 0.4])
