"""The global stage: per-kind whole-image adapters, their composition rule, and their place in the sampler."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition, raise_global_weights
from uir_lora.errors import BankError
from uir_lora.global_stage import GlobalAdapter, GlobalParams, apply_global, thumbnail
from uir_lora.global_stage import adapter as adapter_module
from uir_lora.lab.testing.banks import random_adapter, reread_bank, restored_before, with_global_adapter
from uir_lora.router.router import Router, RoutingResult
from uir_lora.sampler.restore import SamplerOptions


def test_a_fresh_adapter_is_the_identity(photo):
    params = GlobalAdapter()(thumbnail(photo))
    assert torch.allclose(apply_global(photo, params), photo, atol=1e-6)


def test_blend_follows_the_composition_rule(photo):
    first, second = random_adapter(1)(thumbnail(photo)), random_adapter(2)(thumbnail(photo))
    identity = GlobalParams.identity()
    assert GlobalParams.blend([]).is_identity()
    half = GlobalParams.blend([(0.5, first), (0.25, second)])
    expected = identity.curve + 0.5 * (first.curve - identity.curve) + 0.25 * (second.curve - identity.curve)
    assert torch.allclose(half.curve, expected)
    assert torch.allclose(half.offset, 0.5 * first.offset + 0.25 * second.offset)
    mix = identity.mix + 0.5 * (first.mix - identity.mix) + 0.25 * (second.mix - identity.mix)
    assert torch.allclose(half.mix, mix)
    assert torch.allclose(GlobalParams.blend([(1.0, first)]).log_gain, first.log_gain)


def test_curves_are_monotone_and_gains_bounded(photo):
    params = random_adapter(3)(thumbnail(photo * 0.1))
    assert (params.curve.diff(dim=-1) > 0).all()
    assert params.log_gain.abs().max() <= adapter_module.MAX_LOG_GAIN


def test_bands_of_rows_give_the_whole_image_result(photo, monkeypatch):
    params = random_adapter(4)(thumbnail(photo))
    whole = apply_global(photo, params)
    monkeypatch.setattr(adapter_module, "ROW_BAND", 7)
    assert torch.equal(apply_global(photo, params), whole)
    assert not torch.allclose(whole, photo, atol=1e-3)


def test_manifest_keeps_the_global_file_only_when_set(random_bank, own_backbone):
    assert "global_stage" not in (random_bank.root / "manifest.json").read_text()
    with_global_adapter(random_bank.root, "haze", random_adapter(5))
    bank = open_bank(random_bank.root)
    assert bank.manifest.lora("haze").global_stage == "haze.global.safetensors"
    assert bank.global_adapter("noise") is None
    assert isinstance(bank.global_adapter("haze"), GlobalAdapter)


@pytest.mark.parametrize("key, value, message", [
    *[("global_stage", value, "global_stage") for value in ("../outside.safetensors", "haze.pt", 3)],
    *[("restored_before", value, "restored_before must be a list of LoRA names") for value in ("haze", [1], None)],
])
def test_a_bad_global_file_name_or_order_is_refused(random_bank, key, value, message):
    manifest = json.loads((random_bank.root / "manifest.json").read_text())
    manifest["loras"][0][key] = value
    (random_bank.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BankError, match=message):
        open_bank(random_bank.root)


def test_a_missing_global_file_is_named(random_bank):
    with_global_adapter(random_bank.root, "haze", random_adapter(6))
    (random_bank.root / "haze.global.safetensors").unlink()
    with pytest.raises(BankError, match="global adapter of LoRA 'haze' is missing"):
        pipeline.restore(torch.rand(1, 3, 32, 32), None, open_bank(random_bank.root), manual={"haze": 1.0})


def test_the_sampler_runs_the_global_stage_before_the_backbone(random_bank, own_backbone, photo):
    adapter = random_adapter(7)
    with_global_adapter(random_bank.root, "haze", adapter)
    restored, _ = pipeline.restore(photo, own_backbone, open_bank(random_bank.root), manual={"haze": 0.6, "noise": 0.4})
    with torch.no_grad():
        corrected = apply_global(photo, GlobalParams.blend([(0.6, adapter(thumbnail(photo)))]))
    # the same LoRAs without the global adapter, on the image corrected by hand
    manifest = json.loads((random_bank.root / "manifest.json").read_text())
    for entry in manifest["loras"]:
        entry.pop("global_stage", None)
    (random_bank.root / "manifest.json").write_text(json.dumps(manifest))
    local_only = open_bank(random_bank.root)
    assert local_only.global_adapter("haze") is None
    by_hand, _ = pipeline.restore(corrected, own_backbone, local_only, manual={"haze": 0.6, "noise": 0.4})
    assert torch.allclose(restored, by_hand, atol=1e-5)
    assert not torch.allclose(restored, pipeline.restore(photo, own_backbone, local_only,
                                                         manual={"haze": 0.6, "noise": 0.4})[0], atol=1e-3)


def test_a_kind_restored_before_a_global_stage_runs_first_and_the_global_kinds_lora_is_left_out(
        random_bank, own_backbone, photo):
    adapter = random_adapter(9)
    with_global_adapter(random_bank.root, "haze", adapter)
    plain = open_bank(random_bank.root)
    restored_before(random_bank.root, "noise", ["haze"])
    bank = open_bank(random_bank.root)
    weights = {"haze": 0.6, "noise": 0.4, "jpeg": 0.5}
    first, after = pipeline.compose(bank, manual=weights).in_order()
    assert dict(first.weights) == {"noise": 0.4} and dict(after.weights) == {"jpeg": 0.5}
    restored, _ = pipeline.restore(photo, own_backbone, bank, manual=weights)
    # by hand: noise's pass, the haze adapter at its weight on the result, then jpeg's pass (no haze LoRA)
    denoised, _ = pipeline.restore(photo, own_backbone, plain, manual={"noise": 0.4})
    with torch.no_grad():
        corrected = apply_global(denoised, GlobalParams.blend([(0.6, adapter(thumbnail(denoised)))])).clamp(0, 1)
    by_hand, _ = pipeline.restore(corrected, own_backbone, plain, manual={"jpeg": 0.5})
    assert torch.allclose(restored, by_hand, atol=1e-5)
    assert not torch.allclose(restored, pipeline.restore(photo, own_backbone, plain, manual=weights)[0], atol=1e-3)


def test_the_order_changes_only_beside_the_global_stages_a_kind_is_restored_before(random_bank):
    with_global_adapter(random_bank.root, "haze", random_adapter(10))
    assert pipeline.compose(open_bank(random_bank.root), manual={"haze": 1.0, "noise": 1.0}).in_order() is None
    restored_before(random_bank.root, "noise", ["haze"])
    with_global_adapter(random_bank.root, "jpeg", random_adapter(11))
    bank = open_bank(random_bank.root)
    assert pipeline.compose(bank, manual={"noise": 1.0}).in_order() is None  # no global stage beside it
    assert pipeline.compose(bank, manual={"jpeg": 1.0, "noise": 1.0}).in_order() is None  # not one it precedes
    first, after = pipeline.compose(bank, manual={"haze": 1.0, "noise": 0.5, "jpeg": 0.3}).in_order()
    assert dict(first.weights) == {"noise": 0.5} and after is None  # both global kinds' LoRAs left out
    assert bank.manifest.lora("noise").restored_before == ["haze"] and not bank.manifest.lora("jpeg").restored_before
    written = {entry["name"]: entry for entry in bank.manifest.to_json()["loras"]}
    assert written["noise"]["restored_before"] == ["haze"] and "restored_before" not in written["jpeg"]


def presence_reading(weights: dict[str, float], severities: dict[str, float] | None = None) -> RoutingResult:
    return RoutingResult(similarities={name: 0.0 for name in ("noise", "haze", "jpeg")}, weights=weights, top_k=2,
                         temperature=1.0, normalisation="sigmoid", severities=severities or {})


def test_a_second_reading_only_raises_a_global_kind_already_kept_at_the_floor(random_bank):
    bank = reread_bank(random_bank.root, None)
    first = Composition(bank, {"noise": 0.9, "haze": 0.6, "jpeg": 0.3}, severities={"haze": 0.2, "jpeg": 0.1})
    again = Composition(bank, {"noise": 1.0, "haze": 0.95, "jpeg": 0.9}, severities={"haze": 0.7, "jpeg": 0.8})
    raised = raise_global_weights(first, again, 0.5)
    # haze kept at 0.6 takes the second reading's 0.95 and its severity; jpeg, doubted at 0.3, and noise, which has
    # no global stage, stay as they were
    assert dict(raised.weights) == {"noise": 0.9, "haze": 0.95, "jpeg": 0.3}
    assert dict(raised.severities) == {"haze": 0.7, "jpeg": 0.1}
    lower = Composition(bank, {"haze": 0.4}, severities={"haze": 0.9})
    assert raise_global_weights(first, lower, 0.5) == first  # never lowered


def test_a_global_kind_the_second_reading_leaves_sure_runs_its_stage_in_full(random_bank):
    bank = reread_bank(random_bank.root, None)
    first = Composition(bank, {"noise": 0.9, "haze": 0.6, "jpeg": 0.3}, severities={"haze": 0.2, "jpeg": 0.1})
    again = Composition(bank, {"noise": 1.0, "haze": 0.95, "jpeg": 0.9}, severities={"haze": 0.7, "jpeg": 0.8})
    # haze, raised to 0.95, reaches 0.9: its stage runs at 1 with the raising reading's severity; jpeg, kept below
    # the floor, stays doubted however sure the second reading is; noise has no global stage
    full = raise_global_weights(first, again, 0.5, 0.9)
    assert dict(full.weights) == {"noise": 0.9, "haze": 1.0, "jpeg": 0.3}
    assert dict(full.severities) == {"haze": 0.7, "jpeg": 0.1}
    lower = Composition(bank, {"haze": 0.4}, severities={"haze": 0.9})
    assert raise_global_weights(first, lower, 0.5, 0.9) == first  # 0.6 after both readings: short of 0.9
    kept = raise_global_weights(first, lower, 0.5, 0.6)  # the first reading alone reaches 0.6
    assert dict(kept.weights) == {"noise": 0.9, "haze": 1.0, "jpeg": 0.3} and kept.severities == first.severities


def test_a_routed_composition_reads_the_image_again_after_the_first_pass(random_bank, photo, monkeypatch):
    bank = reread_bank(random_bank.root, 0.5)
    composition = pipeline.compose(bank, presence_reading({"noise": 0.9, "haze": 0.6}))
    assert composition.reread is not None and "read again after that pass, and haze takes" in composition.notes[-1]
    seen = []

    def second_reading(router, images, top_k, temperature, normalisation):
        seen.append((images, top_k, temperature, normalisation))
        return [presence_reading({"haze": 0.95, "noise": 0.2}, {"haze": 0.7})]

    monkeypatch.setattr(Router, "route", second_reading)
    staged = composition.reread(photo)
    assert seen[0][0] is photo and seen[0][1:] == (2, 1.0, "sigmoid")  # routed as the first reading was
    assert dict(staged.weights) == {"noise": 0.9, "haze": 0.95} and staged.severities == {"haze": 0.7}
    # nothing to raise, or the router's answer not alone: no second reading
    for routing, manual in ((presence_reading({"noise": 0.9, "haze": 0.3}), None),
                            (presence_reading({"noise": 0.9, "haze": 0.6}), {"jpeg": 0.2}),
                            (replace(presence_reading({"noise": 0.9, "haze": 0.6}), normalisation="softmax"), None),
                            (presence_reading({"noise": 0.9}), None)):
        assert pipeline.compose(bank, routing, manual).reread is None
    unset = reread_bank(random_bank.root, None)
    assert pipeline.compose(unset, presence_reading({"noise": 0.9, "haze": 0.6})).reread is None
    in_full = pipeline.compose(reread_bank(random_bank.root, 0.5, 0.9), presence_reading({"noise": 0.9, "haze": 0.6}))
    assert "takes the larger of the two weights, and runs its stage at 1 from 0.9" in in_full.notes[-1]
    assert dict(in_full.reread(photo).weights) == {"noise": 0.9, "haze": 1.0}  # the second reading's 0.95


def test_the_sampler_runs_the_global_stage_with_the_second_readings_weights(random_bank, own_backbone, photo, caplog):
    caplog.set_level(logging.INFO, logger="uir_lora.sampler.restore")
    bank = reread_bank(random_bank.root, None)
    adapter = bank.global_adapter("haze")
    seen = []

    def reread(image: torch.Tensor) -> Composition:
        seen.append(image)
        return replace(composition, weights={"noise": 0.4, "haze": 1.0})

    composition = replace(pipeline.compose(bank, manual={"noise": 0.4, "haze": 0.3}), reread=reread)
    restored = pipeline.restore_composed(photo, own_backbone, [composition])
    # by hand: noise's pass, then the haze adapter at the second reading's weight on its output
    denoised = pipeline.restore_composed(photo, own_backbone, [pipeline.compose(bank, manual={"noise": 0.4})])
    assert len(seen) == 1 and torch.allclose(seen[0], denoised, atol=1e-6)
    with torch.no_grad():
        corrected = apply_global(denoised, GlobalParams.blend([(1.0, adapter(thumbnail(denoised)))])).clamp(0, 1)
    assert torch.allclose(restored, corrected, atol=1e-5)
    assert "read again after the first pass: haze 0.30 -> 1.00" in caplog.text  # the weights shown are the first's
    plain = pipeline.restore_composed(photo, own_backbone, [replace(composition, reread=None)])
    assert not torch.allclose(restored, plain, atol=1e-3)


def test_the_global_stage_does_not_depend_on_the_tile(random_bank, own_backbone, photo):
    with_global_adapter(random_bank.root, "haze", random_adapter(8))
    bank = open_bank(random_bank.root)
    big, _ = pipeline.restore(photo, own_backbone, bank, manual={"haze": 1.0}, options=SamplerOptions(tile=512))
    small, _ = pipeline.restore(photo, own_backbone, bank, manual={"haze": 1.0}, options=SamplerOptions(tile=64))
    # the backbone's own seams only: a global stage run per 64 px tile would change whole regions
    assert (big - small).abs().mean() < 2e-4
    adapter = open_bank(random_bank.root).global_adapter("haze")
    with torch.no_grad():
        whole = apply_global(photo, adapter(thumbnail(photo)))
        corner = photo[..., :64, :64]
        assert (apply_global(corner, adapter(thumbnail(corner))) - whole[..., :64, :64]).abs().mean() > 1e-3


def test_validation_runs_the_global_stage_before_the_lora(random_bank, own_backbone, photo):
    from uir_lora.lab.train.validate import set_adapter_enabled, validate

    adapters = random_bank.attach(own_backbone)
    images = photo[..., :64, :64].repeat(2, 1, 1, 1)
    try:
        plain = validate(own_backbone, "haze", images, {"sigma": 0.0}, adapters["haze"])
        staged = validate(own_backbone, "haze", images, {"sigma": 0.0}, adapters["haze"],
                          global_stage=random_adapter(9))
    finally:
        set_adapter_enabled(own_backbone, None)
    assert staged["psnr_in"] == plain["psnr_in"] and staged["base_psnr"] == plain["base_psnr"]
    assert staged["psnr_out"] != plain["psnr_out"]


# ---------------------------------------------------------------- the scattering model (haze)

def hazy_scene(size: int = 96) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clear, hazy, airlight): saturated colour patches, whose dark channel is zero as in a clear outdoor photo,
    under haze that thickens from left to right."""
    generator = torch.Generator().manual_seed(0)
    patches = torch.rand(1, 3, 6, 6, generator=generator)
    patches = patches * (patches < patches.amax(dim=1, keepdim=True)).float()  # every patch lacks a channel
    clear = torch.nn.functional.interpolate(patches, size=size, mode="nearest")
    transmission = torch.linspace(0.9, 0.4, size).view(1, 1, 1, size)
    airlight = torch.tensor([[0.85, 0.88, 0.92]])
    return clear, clear * transmission + airlight[..., None, None] * (1 - transmission), airlight


def dehazing_params(omega: float, airlight: torch.Tensor, weight: float = 1.0) -> GlobalParams:
    return GlobalParams(*list(vars(GlobalParams.identity()).values())[:4], torch.tensor([[omega]]), airlight,
                        torch.tensor([[weight]]))


def test_the_scattering_model_is_undone_and_omega_zero_is_the_identity():
    clear, hazy, airlight = hazy_scene()
    restored = apply_global(hazy, dehazing_params(0.95, airlight))
    assert (restored - clear).abs().mean() < 0.5 * (hazy - clear).abs().mean()
    assert GlobalParams.blend([(0.0, dehazing_params(0.95, airlight))]).is_identity()
    assert torch.allclose(apply_global(hazy, dehazing_params(0.0, airlight)), hazy, atol=1e-6)
    assert torch.allclose(apply_global(hazy, dehazing_params(0.9, airlight, weight=0.0)), hazy, atol=1e-6)


def test_dehazing_in_bands_of_rows_gives_the_whole_image_result(monkeypatch):
    _, hazy, airlight = hazy_scene()
    whole = apply_global(hazy, dehazing_params(0.8, airlight))
    monkeypatch.setattr(adapter_module, "ROW_BAND", 7)
    assert torch.equal(apply_global(hazy, dehazing_params(0.8, airlight)), whole)


def test_blend_weighs_the_dehazed_image_like_a_lora_and_keeps_omega_and_airlight(photo):
    _, hazy, airlight = hazy_scene()
    plain = random_adapter(10)(thumbnail(photo))
    blended = GlobalParams.blend([(0.5, dehazing_params(0.8, airlight)), (1.0, plain)])
    assert torch.allclose(blended.dehaze_weight, torch.tensor([[0.5]]))
    assert torch.allclose(blended.omega, torch.tensor([[0.8]])) and torch.allclose(blended.airlight, airlight)
    assert GlobalParams.blend([(1.0, plain)]).omega is None
    # x + w (dehaze(x) - x): linear in the weight
    half = apply_global(hazy, GlobalParams.blend([(0.5, dehazing_params(0.8, airlight))]))
    full = apply_global(hazy, dehazing_params(0.8, airlight))
    assert torch.allclose(half, 0.5 * (hazy + full), atol=1e-5)


def test_a_sure_dehazing_lifts_dense_haze_and_an_unsure_one_stretches_at_most_to_the_high_floor():
    clear, _, airlight = hazy_scene()
    transmission = torch.linspace(0.6, 0.12, clear.shape[-1]).view(1, 1, 1, -1)  # dense towards the right
    hazy = clear * transmission + airlight[..., None, None] * (1 - transmission)
    sure = apply_global(hazy, dehazing_params(0.95, airlight))
    dense = transmission.expand_as(hazy) < adapter_module.MIN_TRANSMISSION
    high_floor, sure_floor = adapter_module.transmission_floor(torch.tensor([[0.0], [1.0]]))
    assert high_floor.item() == pytest.approx(adapter_module.MIN_TRANSMISSION)
    assert sure_floor.item() == pytest.approx(adapter_module.SURE_TRANSMISSION)
    # the dense part comes back only where the floor is lower than its transmission
    assert (sure - clear).abs()[dense].mean() < 0.5 * (hazy - clear).abs()[dense].mean()
    # an unsure weight: its share of a dehazing that divides by no less than the high floor
    low, high = adapter_module.SURE_WEIGHT
    unsure = apply_global(hazy, dehazing_params(0.95, airlight, weight=low))
    stretch = (unsure - hazy) / low + hazy
    assert ((stretch - airlight[..., None, None]).abs() <= (hazy - airlight[..., None, None]).abs()
            / high_floor + 1e-4).all()
    assert not ((sure - airlight[..., None, None]).abs() <= (hazy - airlight[..., None, None]).abs()
                / high_floor + 1e-4).all()


def test_a_mild_haze_read_keeps_the_high_floor_and_a_dense_one_lets_it_down(monkeypatch):
    # the floor alone: the reading's omega (next test) set aside
    monkeypatch.setattr(adapter_module, "dehazing_omega", lambda params: params.omega)
    floor = adapter_module.transmission_floor
    sure, mild, dense = torch.tensor([[1.0]]), torch.tensor([[0.1]]), torch.tensor([[0.9]])
    assert floor(sure, mild).item() == pytest.approx(adapter_module.MIN_TRANSMISSION)
    assert floor(sure, dense).item() == pytest.approx(adapter_module.SURE_TRANSMISSION)
    assert floor(torch.tensor([[0.5]]), dense).item() == pytest.approx(adapter_module.MIN_TRANSMISSION)
    # through run_adapters: the reading reaches the floor only of a dehazing adapter
    clear, _, airlight = hazy_scene()
    transmission = torch.linspace(0.6, 0.12, clear.shape[-1]).view(1, 1, 1, -1)
    hazy = clear * transmission + airlight[..., None, None] * (1 - transmission)
    adapter = GlobalAdapter(dehaze=True)
    torch.nn.init.constant_(adapter.dehaze_head.bias, 20.0)
    with torch.no_grad():
        outputs = [adapter_module.run_adapters(hazy, [(1.0, adapter)], read) for read in (0.1, 0.9, None)]
        plain = [adapter_module.run_adapters(hazy, [(1.0, random_adapter(3))], read) for read in (0.1, 0.9)]
    assert not torch.allclose(outputs[0], outputs[1]) and torch.equal(outputs[1], outputs[2])
    assert torch.equal(plain[0], plain[1])


def test_a_haze_read_sets_omega_and_manual_weights_keep_the_heads():
    low, high = adapter_module.SEVERITY_OMEGA
    assert 0.0 < low < high <= adapter_module.MAX_OMEGA
    clear, _, airlight = hazy_scene()
    params = dehazing_params(0.6, airlight)
    assert adapter_module.dehazing_omega(params).item() == pytest.approx(0.6)  # no reading: the head's own
    for read, omega in ((0.0, low), (1.0, high), (0.5, (low + high) / 2), (1.7, high)):
        severity = torch.tensor([[read]])
        assert adapter_module.dehazing_omega(replace(params, severity=severity)).item() == pytest.approx(omega)
    # through run_adapters: a dense read dehazes further than a mild one, and no read leaves the head's omega
    transmission = torch.linspace(0.8, 0.3, clear.shape[-1]).view(1, 1, 1, -1)
    hazy = clear * transmission + airlight[..., None, None] * (1 - transmission)
    adapter = GlobalAdapter(dehaze=True)
    with torch.no_grad():
        adapter.dehaze_head.bias[0] = -20.0  # the head's omega near 0: no dehazing of its own
        mild, dense, unread = (adapter_module.run_adapters(hazy, [(1.0, adapter)], read) for read in (0.0, 1.0, None))
    error = [(out - clear).abs().mean() for out in (hazy, unread, mild, dense)]
    assert error[1] == pytest.approx(error[0], rel=0.02) and error[3] < error[2] < error[0]


def test_the_router_reads_severities_and_the_composition_carries_them_to_the_haze_floor(photo):
    bank = pipeline.load_bank(pipeline.DEFAULT_BANK)
    hazy = 0.5 * photo + 0.45
    routing = pipeline.estimate(bank, hazy)[0]
    assert set(routing.severities) == set(bank.manifest.names) - {"clean"}  # every kind the encoder was trained on
    assert all(0.0 <= value <= 1.0 for value in routing.severities.values())
    # the estimator's table (CLI and node) shows each reading beside its kind, and none for clean
    rows = {line.split()[0]: line.split() for line in routing.table().splitlines()[1:] if not line.startswith("note")}
    assert routing.table().splitlines()[0].split() == ["LoRA", "similarity", "weight", "severity"]
    kept = [name for name in routing.severities if routing.weights.get(name, 0.0) > 0]
    assert kept and rows["clean"][3] == "-"
    for name in routing.severities:  # a kind left out shows none: the head learned only from damage that is there
        if name in kept:
            assert float(rows[name][3]) == pytest.approx(routing.severities[name], abs=0.005)
        else:
            assert rows[name][3] == "-"
    routed = pipeline.compose(bank, routing)
    manual = pipeline.compose(bank, manual={"haze": 1.0}, mode="manual")
    assert manual.severities == {} and manual.dehaze_severity() is None
    if "haze" in routed.weights:
        assert routed.dehaze_severity() == pytest.approx(routing.severities["haze"])
    forced = pipeline.compose(bank, routing, manual={"haze": 1.0})  # override: the reading still describes the image
    assert forced.dehaze_severity() == pytest.approx(routing.severities["haze"])


def _saved_dehazing_adapter(tmp_path) -> tuple:
    """A dehazing adapter whose omega head is not at its zero start, and its file."""
    adapter = GlobalAdapter(dehaze=True)
    torch.nn.init.normal_(adapter.dehaze_head.weight, std=0.05)
    path = tmp_path / "haze.global.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path))
    return adapter, path


def test_a_dehazing_adapter_file_is_read_as_one(tmp_path, photo):
    adapter, path = _saved_dehazing_adapter(tmp_path)
    from uir_lora.bank.store import read_global_adapter

    read = read_global_adapter(path)
    assert read.dehaze
    with torch.no_grad():
        params = read(thumbnail(photo))
        assert params.omega.shape == (1, 1) and 0 < float(params.omega) < adapter_module.MAX_OMEGA
        assert torch.allclose(params.omega, adapter(thumbnail(photo)).omega)


def test_an_adapters_own_omega_cap_bounds_omega_and_survives_its_file(tmp_path, photo):
    adapter = GlobalAdapter(dehaze=True, omega_cap=0.98)
    torch.nn.init.constant_(adapter.dehaze_head.bias, 20.0)  # omega saturates at the cap
    path = tmp_path / "haze.global.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path))
    from uir_lora.bank.store import read_global_adapter

    with torch.no_grad():
        assert float(read_global_adapter(path)(thumbnail(photo)).omega) == pytest.approx(0.98, abs=1e-4)
        plain = GlobalAdapter(dehaze=True)
        torch.nn.init.constant_(plain.dehaze_head.bias, 20.0)
        assert float(plain(thumbnail(photo)).omega) == pytest.approx(adapter_module.MAX_OMEGA, abs=1e-4)


def test_coefficients_at_any_omega_come_from_those_at_omega_one():
    from uir_lora.global_stage.adapter import coefficients_at_omega, transmission_coefficients

    _, hazy, airlight = hazy_scene()
    unit = transmission_coefficients(hazy, dehazing_params(1.0, airlight))  # equal up to the box filter's rounding
    for omega in (0.0, 0.4, 0.93):
        direct = transmission_coefficients(hazy, dehazing_params(omega, airlight))
        assert torch.allclose(coefficients_at_omega(unit, torch.tensor([[omega]])), direct, atol=5e-4)
        assert torch.allclose(apply_global(hazy, dehazing_params(omega, airlight),
                                           coefficients=coefficients_at_omega(unit, torch.tensor([[omega]]))),
                              apply_global(hazy, dehazing_params(omega, airlight)), atol=1e-3)


def test_the_omega_options_without_dehazing_are_refused_with_the_fix(tmp_path, capsys):
    from uir_lora.lab.train.global_stage import main

    with pytest.raises(SystemExit) as exited:
        main(["--kind", "haze", "--omega-target", "--photos", str(tmp_path), "--out", str(tmp_path / "a.safetensors")])
    assert exited.value.code == 2 and "add --dehaze" in capsys.readouterr().err
    assert not (tmp_path / "a.safetensors").exists()


def test_the_best_omega_search_finds_each_photos_own_haze():
    from uir_lora.lab.train.global_stage import best_omega

    clear, _, _ = hazy_scene()
    # a scene whose darkest channel never falls below 0.2 (a pale one: the prior over-reads its haze) beside one
    # whose dark channel is zero, both under uniform haze t = 0.5 of a white airlight
    clear = torch.cat((0.2 + 0.8 * clear, clear))
    hazy = 0.5 * clear + 0.5
    params = GlobalParams.blend([(1.0, dehazing_params(0.5, torch.ones(1, 3)))], batch=2)
    params = GlobalParams(**{**vars(params), "omega": torch.full((2, 1), 0.5), "airlight": torch.ones(2, 3),
                             "dehaze_weight": torch.ones(2, 1)})
    found = best_omega(hazy, clear, params, cap=0.98)
    # 1 - omega * dark(I / A) = t: omega = 0.5 / 0.6 for the pale scene, 1 (so the cap) for the other
    assert found[0].item() == pytest.approx(0.5 / 0.6, abs=0.03)
    assert found[1].item() == pytest.approx(0.98, abs=1e-6)


def test_the_shipped_haze_adapter_dehazes_a_photo_and_leaves_the_clear_one_nearly_alone():
    skimage_data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(skimage_data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    clear = torch.nn.functional.interpolate(photo, size=(192, 256), mode="area")
    transmission = torch.linspace(0.8, 0.4, 192).view(1, 1, 192, 1)  # thicker towards the bottom
    hazy = clear * transmission + torch.tensor([0.85, 0.88, 0.92]).view(1, 3, 1, 1) * (1 - transmission)
    adapter = pipeline.load_bank(pipeline.DEFAULT_BANK).global_adapter("haze")
    assert adapter is not None and adapter.dehaze
    with torch.no_grad():
        restored = apply_global(hazy, adapter(thumbnail(hazy)))
        kept = apply_global(clear, adapter(thumbnail(clear)))
    assert (restored - clear).abs().mean() < 0.6 * (hazy - clear).abs().mean()
    assert (kept - clear).abs().mean() < 0.05 * (hazy - clear).abs().mean()


def test_the_exposure_anchor_lifts_a_dark_photos_highlights_and_leaves_a_bright_one(photo, tmp_path):
    adapter = GlobalAdapter(anchor=True).eval()
    bright = photo / torch.quantile(thumbnail(photo).amax(dim=1).flatten(), 0.99) * 0.95
    with torch.no_grad():
        assert torch.allclose(apply_global(bright.clamp(0, 1), adapter(thumbnail(bright.clamp(0, 1)))),
                              bright.clamp(0, 1), atol=1e-5), "highlights above the anchor: no gain"
        dark = bright.clamp(0, 1) * 0.1
        params = adapter(thumbnail(dark))
        lifted = apply_global(dark, params)
    level = torch.quantile(thumbnail(lifted).amax(dim=1).flatten(), 0.99)
    assert float(level) == pytest.approx(adapter_module.ANCHOR_LEVEL, abs=0.02)
    half = GlobalParams.blend([(0.5, params)])
    assert torch.allclose(half.exposure, 0.5 * params.exposure), "a gain composes in log space"
    assert not half.is_identity() and GlobalParams.blend([(0.0, params)]).is_identity()
    path = tmp_path / "low_light.global.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path))
    from uir_lora.bank.store import read_global_adapter

    read = read_global_adapter(path)
    assert read.anchor and not read.dehaze
    with torch.no_grad():
        assert torch.allclose(read(thumbnail(dark)).exposure, params.exposure)
    assert GlobalAdapter()(thumbnail(dark)).exposure is None, "an adapter without the anchor has no gain"


def test_training_on_from_an_adapter_file_starts_from_its_weights(tmp_path, photo):
    from uir_lora.lab.train.global_stage import GlobalConfig, initial_adapter

    saved, path = _saved_dehazing_adapter(tmp_path)
    start = initial_adapter(GlobalConfig(kind="haze", dehaze=True, init=str(path)))
    assert start.training and all(parameter.requires_grad for parameter in start.parameters())
    with torch.no_grad():
        assert torch.allclose(start(thumbnail(photo)).omega, saved(thumbnail(photo)).omega)
    capped = GlobalAdapter(dehaze=True, omega_cap=0.98)  # saved as the trainer saves: in float16
    save_file({k: v.half().contiguous() for k, v in capped.state_dict().items()}, str(tmp_path / "capped.safetensors"))
    again = initial_adapter(GlobalConfig(kind="haze", dehaze=True, omega_cap=0.98,
                                         init=str(tmp_path / "capped.safetensors")))
    assert float(again.omega_limit) == pytest.approx(0.98, abs=1e-3), "the file's own cap, given again, is no mismatch"
    fresh = initial_adapter(GlobalConfig(kind="haze", dehaze=True))
    with torch.no_grad():
        assert not torch.allclose(fresh(thumbnail(photo)).omega, saved(thumbnail(photo)).omega)


def test_an_init_file_unlike_the_options_is_refused_with_the_fix(tmp_path, capsys):
    from uir_lora.lab.train.global_stage import main

    _, path = _saved_dehazing_adapter(tmp_path)
    out = tmp_path / "a.safetensors"
    for options in (["--kind", "haze"], ["--kind", "haze", "--dehaze", "--omega-cap", "0.98"]):
        with pytest.raises(SystemExit) as exited:
            main([*options, "--init", str(path), "--photos", str(tmp_path), "--out", str(out)])
        error = capsys.readouterr().err
        assert exited.value.code == 2 and "dehaze=True" in error and "to train on from it" in error
    with pytest.raises(SystemExit) as exited:
        main(["--kind", "haze", "--dehaze", "--init", str(tmp_path / "none.safetensors"), "--photos", str(tmp_path),
              "--out", str(out)])
    assert exited.value.code == 2 and "missing" in capsys.readouterr().err
    assert not out.exists()


def test_a_continuation_records_how_its_starting_file_was_trained(tmp_path):
    from PIL import Image

    from uir_lora.lab.train.global_stage import main
    from uir_lora.lab.train.joint import global_stage_provenance

    photos = tmp_path / "photos"
    photos.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(2):
        pixels = (torch.rand(96, 96, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(photos / f"{index}.png")
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    common = ["--kind", "haze", "--dehaze", "--photos", str(photos), "--steps", "1", "--batch", "2", "--crop", "64",
              "--loss-side", "32"]
    assert main([*common, "--out", str(first), "--seed", "3"]) == 0
    assert main([*common, "--out", str(second), "--init", str(first)]) == 0
    provenance = global_stage_provenance(second)
    assert provenance["init"] == str(first)
    assert provenance["init_from"] == global_stage_provenance(first) and provenance["init_from"]["seed"] == 3
