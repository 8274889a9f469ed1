"""Coarse-to-fine LoRAs (``LoraEntry.coarsest_side``): the manifest field, which passes run on the pyramid, and the
sampler's pyramid against one built by hand from flat restores."""

from __future__ import annotations

import json

import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.errors import BankError
from uir_lora.sampler.multiscale import multiscale
from uir_lora.sampler.restore import SamplerOptions, pyramid_levels_of


def asking(bank_root, **sides: int):
    """The bank in ``bank_root`` with each named LoRA's ``coarsest_side`` set."""
    manifest = json.loads((bank_root / "manifest.json").read_text())
    for entry in manifest["loras"]:
        if entry["name"] in sides:
            entry["coarsest_side"] = sides[entry["name"]]
    (bank_root / "manifest.json").write_text(json.dumps(manifest))
    return open_bank(bank_root)


def test_the_manifest_keeps_the_side_only_when_set(random_bank):
    assert "coarsest_side" not in (random_bank.root / "manifest.json").read_text()
    bank = asking(random_bank.root, jpeg=256)
    assert bank.manifest.lora("jpeg").coarsest_side == 256 and bank.manifest.lora("noise").coarsest_side == 0
    written = bank.manifest.to_json()
    assert [entry.get("coarsest_side") for entry in written["loras"]] == [None, None, 256]


@pytest.mark.parametrize("value", [-1, 8, 31, "256", True, 1.5, None, 70000])
def test_a_bad_side_is_refused_with_what_is_allowed(random_bank, value):
    with pytest.raises(BankError, match=r"coarsest_side must be 0 \(run flat\) or a whole number of pixels from 32"):
        asking(random_bank.root, jpeg=value)


def test_a_pass_runs_on_the_pyramid_only_when_every_lora_in_it_asks(random_bank):
    bank = asking(random_bank.root, jpeg=32, haze=64)

    def levels(weights: dict[str, float], height: int = 96, width: int = 128) -> int:
        return pyramid_levels_of(pipeline.compose(bank, manual=weights), height, width)

    assert levels({"jpeg": 1.0}) == 1  # 96 -> 48 keeps 32 px; 24 would not
    assert levels({"jpeg": 1.0}, 256, 256) == 3
    assert levels({"jpeg": 1.0, "noise": 0.5}) == 0  # noise runs flat, so the pass does
    assert levels({"jpeg": 1.0, "haze": 0.5}, 256, 256) == 2  # the largest side asked decides
    assert levels({"jpeg": 1.0}, 40, 400) == 0  # a halving would leave under 32 px
    assert levels({}) == 0


def test_the_sampler_runs_a_coarse_to_fine_pass_as_the_pyramid_of_flat_restores(random_bank, own_backbone, photo):
    flat = open_bank(random_bank.root)
    weights = {"jpeg": 1.0}
    flat_out, _ = pipeline.restore(photo, own_backbone, flat, manual=weights)
    bank = asking(random_bank.root, jpeg=32)
    restored, _ = pipeline.restore(photo, own_backbone, bank, manual=weights)
    by_hand = multiscale(lambda level: pipeline.restore(level, own_backbone, flat, manual=weights)[0], photo, 1)
    assert torch.allclose(restored, by_hand.clamp(0, 1), atol=1e-5)
    assert not torch.allclose(restored, flat_out, atol=1e-3)
    # beside a LoRA that does not ask, the pass is the flat one
    mixed = {"jpeg": 1.0, "noise": 0.5}
    assert torch.equal(pipeline.restore(photo, own_backbone, bank, manual=mixed)[0],
                       pipeline.restore(photo, own_backbone, flat, manual=mixed)[0])


def test_the_progress_counts_the_full_scale_tiles_only(random_bank, own_backbone, photo):
    bank = asking(random_bank.root, jpeg=32)
    calls: list[tuple[int, int]] = []
    pipeline.restore(photo, own_backbone, bank, manual={"jpeg": 1.0}, options=SamplerOptions(tile=64),
                     progress=lambda *c: calls.append(c))
    assert calls and calls[-1][0] == calls[-1][1] and all(done <= total for done, total in calls)


def test_the_tool_sets_one_entrys_side_and_refuses_a_bad_one_without_writing(random_bank, tool, capsys):
    setter = tool("set_coarsest_side")
    manifest = random_bank.root / "manifest.json"
    before = json.loads(manifest.read_text())
    assert setter.main([str(random_bank.root), "jpeg", "256"]) == 0
    after = json.loads(manifest.read_text())
    assert after["loras"][2].pop("coarsest_side") == 256 and after == before
    written = manifest.read_bytes()
    for argv, message in (([str(random_bank.root), "jpeg", "16"], "coarsest_side must be 0"),
                          ([str(random_bank.root), "rain", "256"], "has no LoRA 'rain'")):
        assert setter.main(argv) == 2
        assert message in capsys.readouterr().err
        assert manifest.read_bytes() == written
    assert setter.main([str(random_bank.root), "jpeg", "0"]) == 0
    assert json.loads(manifest.read_text()) == before
